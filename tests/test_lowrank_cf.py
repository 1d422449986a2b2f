"The low-rank user CF: exact at full rank, kernel = its plain twin, near-optimal embedding, clear errors."
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st

from thu_big_data_ml.cf import NeighbourCF
from thu_big_data_ml.lowrank_cf import LowRankUserCF, _block_topk, block_topk_reference, cosine_embedding


def _problem(seed, n_u=50, n_i=20, density=0.3):
    rng = np.random.default_rng(seed)
    u, i = np.nonzero(rng.random((n_u, n_i)) < density)
    r = rng.uniform(1, 5, len(u))                              # continuous: no ties between similarities
    tu, ti = rng.integers(0, n_u, 200), rng.integers(0, n_i, 200)
    return (u, i, r, n_u, n_i), tu, ti


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.sampled_from([1, 3, 10, None]), target=st.sampled_from(['raw', 'mean', 'baseline']),
       positive_only=st.booleans())
def test_full_rank_is_the_exact_user_cosine_cf(seed, k, target, positive_only):
    train, tu, ti = _problem(seed)
    kw = dict(k=k, target=target, positive_only=positive_only, dtype=np.float64)
    a = LowRankUserCF(rank=train[4], **kw).fit(train)
    b = NeighbourCF(kind='user', sim='cosine', **kw).fit(train)
    np.testing.assert_allclose(a.predict(tu, ti), b.predict(tu, ti), rtol=1e-9, atol=1e-9)
    assert a.info_ == b.info_


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.sampled_from([-1, 1, 4, 50]), positive_only=st.booleans(),
       rows=st.integers(1, 9), cols=st.integers(1, 40))
def test_kernel_equals_its_reference(seed, k, positive_only, rows, cols):
    rng = np.random.default_rng(seed)
    S = rng.standard_normal((rows, cols)).astype(np.float32)
    S[rng.random(S.shape) < 0.1] = 0
    S[:, :cols // 3] = np.round(S[:, :cols // 3])               # ties: the lower position wins in both
    nb = np.sort(rng.choice(3 * cols, cols, replace=False)).astype(np.int64)
    q = rng.choice(np.concatenate([nb, [-5]]), rows).astype(np.int64)   # asked users that are raters: skipped
    v = rng.uniform(-2, 5, cols)
    out = [np.empty(rows), np.empty(rows), np.empty(rows, np.int32)]
    _block_topk(S, nb, v, q, k, positive_only, 0.05, *out)
    for x, y in zip(out, block_topk_reference(S, nb, v, q, k, positive_only, 0.05)):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)


def test_randomized_embedding_is_near_the_best_rank_r():
    rng = np.random.default_rng(3)
    A = rng.random((300, 8)) @ rng.random((8, 120)) + 0.3 * rng.random((300, 120))
    A[rng.random(A.shape) < 0.5] = 0
    X = sp.csr_matrix(A); Xn = A / np.linalg.norm(A, axis=1, keepdims=True); G = Xn @ Xn.T
    u, s, _ = np.linalg.svd(Xn, full_matrices=False)
    for r in (4, 16):
        best = np.linalg.norm((u[:, :r] * s[:r]) @ (u[:, :r] * s[:r]).T - G)
        Z = cosine_embedding(X, rank=r, dtype=np.float64)
        assert Z.shape == (300, r)
        assert np.linalg.norm(Z @ Z.T - G) <= 1.02 * best
    Z0 = cosine_embedding(X, rank=10, seed=0); Z1 = cosine_embedding(X, rank=10, seed=0)
    assert np.array_equal(Z0, Z1)                              # seeded: deterministic


def test_empty_rows_and_unrated_movies_fall_back():
    u = np.array([0, 0, 1, 1, 3]); i = np.array([0, 1, 0, 2, 1]); r = np.array([5., 3., 4., 1., 2.])
    m = LowRankUserCF(rank=2, k=2, dtype=np.float64).fit((u, i, r, 5, 4))      # user 2, 4 and movie 3: no ratings
    assert np.all(m.Z_[[2, 4]] == 0)
    p = m.predict([2, 0, 4], [0, 3, 3])
    assert np.all(np.isfinite(p)) and m.info_['defined'] == 0
    assert m.info_['global_mean'] == 1 and m.info_['user_mean'] == 1 and m.info_['item_mean'] == 1


def test_memory_is_users_by_rank_and_explain_uses_the_embedding():
    train, tu, ti = _problem(1, n_u=80, n_i=30)
    m = LowRankUserCF(rank=5, k=4, dtype=np.float64).fit(train)
    assert m.Z_.shape == (80, 5) and not any(isinstance(x, np.ndarray) and x.size >= 80 * 80 for x in vars(m).values())
    defined = [(int(a), int(b)) for a, b in zip(tu, ti) if np.isfinite(m.predict_raw([a], [b])[0])]
    assert defined                                             # the check below must run
    u0, i0 = defined[0]
    ex = m.explain(u0, i0, top=50)
    assert ex.attrs['fallback'] is None and 1 <= len(ex) <= 4
    np.testing.assert_allclose(ex['similarity'].to_numpy(), m.Z_[ex['neighbour'].to_numpy()] @ m.Z_[u0])
    assert abs(ex.attrs['prediction'] - m.predict([u0], [i0])[0]) < 1e-12


def test_blocks_do_not_change_the_answer():
    train, tu, ti = _problem(2, n_u=120, n_i=30, density=0.5)
    a = LowRankUserCF(rank=6, k=5, dtype=np.float64).fit(train).predict(tu, ti)
    b = LowRankUserCF(rank=6, k=5, dtype=np.float64, block=7).fit(train).predict(tu, ti)
    np.testing.assert_allclose(a, b, rtol=1e-12)                  # BLAS blocking: rounding only


@pytest.mark.parametrize('kw, match', [(dict(rank=0), 'rank'), (dict(rank=True), 'rank'), (dict(rank=2.5), 'rank'),
                                       (dict(block=0), 'block'), (dict(k=0), 'k must'), (dict(target='x'), 'target'),
                                       (dict(min_k=0), 'min_k')])
def test_bad_arguments_are_named(kw, match):
    with pytest.raises(ValueError, match=match): LowRankUserCF(**kw)


def test_misuse_is_an_error():
    train, tu, ti = _problem(4)
    with pytest.raises(RuntimeError, match='not fitted'): LowRankUserCF().predict(tu, ti)
    m = LowRankUserCF(rank=3).fit(train)
    with pytest.raises(ValueError, match='similarity'): LowRankUserCF().fit(train, similarity=np.eye(50))
    with pytest.raises((ValueError, IndexError)): m.predict([50], [0])
    with pytest.raises(ValueError, match='n_iter'): cosine_embedding(sp.eye(5, format='csr'), rank=2, n_iter=-1)
