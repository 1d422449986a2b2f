"""Chapter 02 (thu_big_data_ml.cf): exactness against plain references, fallbacks, variants, bad input."""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st

from thu_big_data_ml.cf import (SIMILARITIES, VARIANTS, CosineCF, NeighbourCF, cosine_cf_reference, cross_validate,
                                fit_baseline, common_item_similarity, common_item_similarity_reference, make_variant, pair_sums,
                                rating_matrix, similarity_matrix)
from thu_big_data_ml.metrics import evaluate


def random_problem(n_u=70, n_i=45, density=0.3, seed=0, n_test=400):
    rng = np.random.default_rng(seed)
    X = np.where(rng.random((n_u, n_i)) < density, rng.integers(1, 6, (n_u, n_i)), 0).astype(np.float32)
    X[2] = 0          # a user without training ratings
    X[:, 5] = 0       # a movie nobody rated
    tu, ti = np.nonzero(X == 0)
    pick = rng.choice(len(tu), min(n_test, len(tu)), replace=False)
    u, i = np.nonzero(X)
    return X, (u, i, X[u, i], n_u, n_i), tu[pick], ti[pick]


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_fast_path_equals_dense_reference(seed):
    X, train, tu, ti = random_problem(seed=seed)
    ref = cosine_cf_reference(X, np.c_[tu, ti])
    est = CosineCF().fit(train).predict_raw(tu, ti)
    assert np.isnan(ref).any(), "the problem should contain undefined predictions"
    assert np.array_equal(np.isnan(ref), np.isnan(est))
    assert np.nanmax(np.abs(est - ref)) < 1e-6
    est64 = CosineCF(dtype=np.float64).fit(train).predict_raw(tu, ti)
    assert np.nanmax(np.abs(est64 - ref)) < 1e-12


def test_reference_excludes_the_user_itself():
    # user 0 rated item 0; predicting (0, 0) must use the others only: users 1 (rating 2) and 2 (rating 4)
    X = np.array([[5, 1, 0], [2, 1, 0], [4, 0, 1]], np.float32)
    ref = cosine_cf_reference(X, np.array([[0, 0]]))
    S = (X @ X.T) / np.outer(np.linalg.norm(X, axis=1), np.linalg.norm(X, axis=1))
    want = (S[0, 1] * 2 + S[0, 2] * 4) / (S[0, 1] + S[0, 2])
    assert ref[0] == pytest.approx(want)
    u, i = np.nonzero(X)
    assert CosineCF().fit((u, i, X[u, i], 3, 3)).predict_raw(np.array([0]), np.array([0]))[0] == pytest.approx(want, abs=1e-6)


def test_topk_kernel_matches_a_loop():
    X, train, tu, ti = random_problem(seed=3)
    m = NeighbourCF(k=4, dtype=np.float64).fit(train)
    S = m.S_
    for u, j, got in zip(tu, ti, m.predict_raw(tu, ti)):
        cand = sorted(((S[u, v], v) for v in np.nonzero(X[:, j])[0] if v != u and S[u, v] > 0), key=lambda t: (-t[0], t[1]))[:4]
        den = sum(s for s, _ in cand)
        want = np.nan if den == 0 else sum(s * X[v, j] for s, v in cand) / den
        assert (np.isnan(want) and np.isnan(got)) or abs(want - got) < 1e-12


def test_topk_with_large_k_equals_all_neighbours():
    X, train, tu, ti = random_problem(seed=4)
    a = NeighbourCF(dtype=np.float64).fit(train).predict_raw(tu, ti)
    b = NeighbourCF(k=10_000, dtype=np.float64).fit(train).predict_raw(tu, ti)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_item_based_is_user_based_on_the_transpose():
    X, (u, i, r, n_u, n_i), tu, ti = random_problem(seed=5)
    a = NeighbourCF(kind='item', dtype=np.float64).fit((u, i, r, n_u, n_i)).predict_raw(tu, ti)
    b = NeighbourCF(kind='user', dtype=np.float64).fit((i, u, r, n_i, n_u)).predict_raw(ti, tu)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    ref = cosine_cf_reference(X.T, np.c_[ti, tu])
    np.testing.assert_allclose(a, ref, rtol=0, atol=1e-12)


def test_common_item_similarities_match_loops():
    X, (u, i, r, n_u, n_i), _, _ = random_problem(n_u=25, n_i=30, density=0.5, seed=6)
    M = rating_matrix(u, i, r, n_u, n_i, np.float64)
    S_p = similarity_matrix(M, 'pearson', 0.0, np.float64)
    S_m = similarity_matrix(M, 'msd', 0.0, np.float64)
    S_s = similarity_matrix(M, 'pearson', 3.0, np.float64)
    for a in range(n_u):
        for b in range(n_u):
            common = (X[a] > 0) & (X[b] > 0)
            n = common.sum()
            if a == b:
                assert S_p[a, b] == 0 and S_m[a, b] == 0
                continue
            xa, xb = X[a, common].astype(float), X[b, common].astype(float)
            den = np.sqrt((xa ** 2).sum() * (xb ** 2).sum())
            p = (xa @ xb) / den if den > 0 else 0.0
            assert S_p[a, b] == pytest.approx(p, abs=1e-12)
            assert S_s[a, b] == pytest.approx(p * max(n - 1, 0) / (n - 1 + 3) if n > 1 else 0.0, abs=1e-12)
            assert S_m[a, b] == pytest.approx(1 / (1 + ((xa - xb) ** 2).mean()) if n else 0.0, abs=1e-12)


@pytest.mark.parametrize('cfg', [dict(), dict(kind='item', sim='pearson_baseline', target='baseline', shrinkage=10),
                                 dict(sim='msd', target='mean')])
def test_torch_path_equals_numba_on_cpu(cfg):
    pytest.importorskip('torch')
    X, train, tu, ti = random_problem(seed=7)
    a = NeighbourCF(**cfg, dtype=np.float64).fit(train).predict_raw(tu, ti)
    b = NeighbourCF(**cfg, dtype=np.float64, device='torch:cpu').fit(train).predict_raw(tu, ti)
    assert np.array_equal(np.isnan(a), np.isnan(b))
    assert np.nanmax(np.abs(a - b)) < 1e-9


def test_fallback_chain_is_applied_and_counted():
    X, train, tu, ti = random_problem(seed=8)
    m = CosineCF().fit(train)
    raw = m.predict_raw(tu, ti)
    # add the user without training ratings (2) at a rated movie and the unrated movie (5) for a rated user
    qu = np.r_[tu, 2, 0]; qi = np.r_[ti, 0, 5]
    pred = m.predict(qu, qi)
    info = m.info_
    assert pred.dtype == np.float64 and np.isfinite(pred).all()
    assert info['pairs'] == len(qu) and info['unseen_user'] == (qu == 2).sum() and info['unseen_item'] == (qi == 5).sum()
    assert info['fallback'] == ((qu == 2) | (qi == 5)).sum()
    undefined = int(np.isnan(raw).sum()) + 2
    assert info['user_mean'] + info['item_mean'] + info['global_mean'] == undefined
    assert info['defined'] == len(qu) - undefined
    user_mean = X.sum(1) / np.maximum((X > 0).sum(1), 1)
    item_mean = X.sum(0) / np.maximum((X > 0).sum(0), 1)
    for p, u, j, r in zip(pred[:-2], tu, ti, raw):
        if np.isnan(r):   # the user without ratings falls to the movie mean, the unrated movie to the user mean
            want = user_mean[u] if (X[u] > 0).any() else (item_mean[j] if (X[:, j] > 0).any() else X[X > 0].mean())
            assert p == pytest.approx(want, abs=1e-5)
    assert pred[-2] == pytest.approx(item_mean[0], abs=1e-5)      # unseen user -> movie mean
    assert pred[-1] == pytest.approx(user_mean[0], abs=1e-5)      # unseen movie -> user mean
    # user 2 has no ratings and movie 5 has none: the global mean
    assert m.predict(np.array([2]), np.array([5]))[0] == pytest.approx(X[X > 0].mean(), abs=1e-5)
    assert m.info_['global_mean'] == 1


def test_baseline_fallback_and_clipping_in_evaluate_only():
    X, train, tu, ti = random_problem(seed=9)
    m = NeighbourCF(kind='item', sim='pearson_baseline', target='baseline', k=5, shrinkage=5).fit(train)
    p = m.predict(np.r_[tu, 2], np.r_[ti, 0])                    # user 2 has no training rating: b_u = 0
    assert m.info_['baseline'] >= 1 and m.info_['user_mean'] == 0 and m.bu_[2] == 0
    assert p[-1] == pytest.approx(m.mu_ + m.bi_[0], abs=1e-5)
    test = (tu, ti, np.ones(len(tu), np.float32), 70, 45)
    e, e_raw = evaluate(m, test), evaluate(m, test, clip=None)
    raw = m.predict(tu, ti)
    assert raw.min() < 1 and e['clipped'] == (raw < 1).sum() + (raw > 5).sum() > 0   # predict does not clip ...
    assert e['rmse'] < e_raw['rmse']                                                 # ... evaluate does
    assert e['baseline'] == m.info_['baseline'] and e['pairs'] == len(tu)


def test_out_of_range_indices_are_errors_not_fallbacks():
    X, train, tu, ti = random_problem(seed=9)
    for m in (CosineCF().fit(train), NeighbourCF(kind='item', target='baseline', k=3).fit(train)):
        with pytest.raises(ValueError, match=r'user indices must lie in \[0, 70\)'):
            m.predict(np.r_[tu, 70], np.r_[ti, 0])
        with pytest.raises(ValueError, match=r'item indices must lie in \[0, 45\)'):
            m.predict(np.array([0]), np.array([45]))
        with pytest.raises(ValueError, match='indices must lie'):
            m.predict_raw(np.array([0]), np.array([10**6]))
        with pytest.raises(ValueError, match='indices must lie'):
            m.explain(70, 0)


def test_fit_baseline_without_regularisation_leaves_unseen_biases_at_zero():
    u, i, r = np.array([0, 1]), np.array([0, 0]), np.array([4.0, 2.0])
    mu, bu, bi = fit_baseline(u, i, r, 3, 2, reg_user=0, reg_item=0, n_epochs=3)
    assert np.isfinite(bu).all() and np.isfinite(bi).all() and bu[2] == 0 and bi[1] == 0


def test_fit_baseline_matches_closed_form_for_one_sweep():
    rng = np.random.default_rng(0)
    u = rng.integers(0, 20, 300); i = rng.integers(0, 15, 300); r = rng.integers(1, 6, 300).astype(np.float32)
    mu, bu, bi = fit_baseline(u, i, r, 20, 15, reg_user=3, reg_item=2, n_epochs=1)
    r = r.astype(np.float64)
    bi_want = np.array([(r[i == j] - mu).sum() / (2 + (i == j).sum()) for j in range(15)])
    bu_want = np.array([(r[u == k] - mu - bi_want[i[u == k]]).sum() / (3 + (u == k).sum()) for k in range(20)])
    np.testing.assert_allclose(bi, bi_want, atol=1e-10); np.testing.assert_allclose(bu, bu_want, atol=1e-10)


def test_explain_reproduces_the_prediction():
    X, train, tu, ti = random_problem(seed=10)
    for m in (CosineCF().fit(train), NeighbourCF(kind='item', sim='pearson', target='mean', k=6).fit(train)):
        raw = m.predict_raw(tu, ti)
        p = int(np.nonzero(np.isfinite(raw))[0][0])
        ex = m.explain(tu[p], ti[p], top=10_000)
        offset = ex.attrs['offset']
        assert ex.attrs['fallback'] is None
        assert ex['weight'].sum() == pytest.approx(1.0)
        assert offset + ex['contribution'].sum() == pytest.approx(ex.attrs['prediction'], abs=1e-5)
        assert (ex['similarity'].abs().diff().dropna() <= 1e-12).all()


def test_cross_validate_shares_folds_and_reports_rows():
    X, (u, i, r, n_u, n_i), _, _ = random_problem(seed=11)

    class Inter:   # the Interactions protocol: attributes + subset
        def __init__(s, u, i, r): s.user, s.item, s.rating, s.n_users, s.n_items = u, i, r, n_u, n_i
        def subset(s, idx): return Inter(s.user[idx], s.item[idx], s.rating[idx])
        def __len__(s): return len(s.user)
    data = Inter(u, i, r)
    rng = np.random.default_rng(0); perm = rng.permutation(len(u)); half = len(u) // 2
    folds = [(np.sort(perm[:half]), np.sort(perm[half:])), (np.sort(perm[half:]), np.sort(perm[:half]))]
    names = list(VARIANTS)[:3]
    cv = cross_validate({n: VARIANTS[n] for n in names}, data, folds, progress=False)
    assert len(cv) == 6 and set(cv['variant']) == set(names)
    assert (cv['rmse'] > 0).all() and (cv['rmse'] < 4).all()
    m = make_variant(names[0]).fit(data.subset(folds[0][0]))
    va = data.subset(folds[0][1])
    assert cv.query('fold == 0')['rmse'].iloc[0] == pytest.approx(evaluate(m, va)['rmse'])


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize('k', [0, -3, 2.5, True])
def test_bad_k(k):
    with pytest.raises(ValueError, match='k must be a positive integer'):
        NeighbourCF(k=k)


def test_bad_options():
    for kw, msg in ((dict(kind='movie'), 'kind'), (dict(sim='jaccard'), 'sim'), (dict(target='median'), 'target'),
                    (dict(shrinkage=-1), 'shrinkage'), (dict(min_k=0), 'min_k'),
                    (dict(device='gpu'), 'device'), (dict(dtype=np.int32), 'dtype')):
        with pytest.raises(ValueError, match=msg):
            NeighbourCF(**kw)
    with pytest.raises(NotImplementedError, match='top-k'):
        NeighbourCF(k=5, device='torch:cpu')
    with pytest.raises(ValueError, match='unknown variant'):
        make_variant('nope')


def test_mismatched_shapes_and_empty_test_set():
    X, train, tu, ti = random_problem(seed=12)
    m = CosineCF().fit(train)
    with pytest.raises(ValueError, match='one length'):
        m.predict(tu, ti[:-1])
    empty = m.predict(np.array([], np.int64), np.array([], np.int64))
    assert empty.shape == (0,) and empty.dtype == np.float64 and m.info_['pairs'] == 0
    with pytest.raises(ValueError, match='indices must lie'):
        m.predict(np.array([-1]), np.array([0]))
    with pytest.raises(TypeError, match='integer'):
        m.predict(np.array([0.5]), np.array([0]))
    with pytest.raises(ValueError, match='empty test set'):
        cosine_cf_reference(X, np.zeros((0, 2), int))
    with pytest.raises(ValueError, match=r'shape \(n, 2\)'):
        cosine_cf_reference(X, np.zeros((3, 3), int))
    with pytest.raises(ValueError, match='2-d'):
        cosine_cf_reference(X[0], np.zeros((3, 2), int))


def test_bad_training_data():
    with pytest.raises(RuntimeError, match='not fitted'):
        CosineCF().predict(np.array([0]), np.array([0]))
    with pytest.raises(ValueError, match='empty'):
        CosineCF().fit((np.array([], int), np.array([], int), np.array([], np.float32), 3, 3))
    with pytest.raises(ValueError, match='one length'):
        CosineCF().fit((np.array([0, 1]), np.array([0]), np.array([1.0]), 3, 3))
    with pytest.raises(ValueError, match='indices must lie'):
        CosineCF().fit((np.array([0, 5]), np.array([0, 1]), np.array([1.0, 2.0]), 3, 3))
    with pytest.raises(ValueError, match='duplicate'):
        CosineCF().fit((np.array([0, 0]), np.array([1, 1]), np.array([1.0, 2.0]), 3, 3))
    with pytest.raises(TypeError, match='Interactions'):
        CosineCF().fit([1, 2, 3])
    X, train, _, _ = random_problem(seed=13)
    with pytest.raises(ValueError, match='similarity must be'):
        CosineCF().fit(train, similarity=np.zeros((3, 3)))


def test_pair_sums_rejects_bad_k():
    S = np.zeros((2, 2), np.float32)
    M = rating_matrix(np.array([0]), np.array([0]), np.array([1.0]), 2, 2).T.tocsr()
    with pytest.raises(ValueError, match='k must be'):
        pair_sums(S, M, np.array([0]), np.array([0]), k=0)
    with pytest.raises(ValueError, match='indices must lie'):      # the numba kernels do no bounds checks
        pair_sums(S, M, np.array([2]), np.array([0]))
    with pytest.raises(ValueError, match='indices must lie'):
        pair_sums(S, M, np.array([0]), np.array([2]))


# -- the sparse common-item kernel and the heap top-k kernel against their plain twins

@settings(max_examples=25, deadline=None)
@given(n_rows=st.integers(1, 30), n_cols=st.integers(1, 20), density=st.floats(0.05, 0.9), seed=st.integers(0, 10_000),
       shrinkage=st.sampled_from([0.0, 1.0, 25.0]), centred=st.booleans())
def test_common_item_kernel_equals_dense_reference(n_rows, n_cols, density, seed, shrinkage, centred):
    rng = np.random.default_rng(seed)
    M = sp.random(n_rows, n_cols, density=density, random_state=seed, format='csr', dtype=np.float64)
    M.data = rng.integers(1, 6, M.nnz).astype(np.float64) - (rng.random(M.nnz) * 3 if centred else 0)
    for sim in SIMILARITIES:
        fast = common_item_similarity(M, sim, shrinkage, np.float64)
        ref = common_item_similarity_reference(M, sim, shrinkage, np.float64)
        np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-10, err_msg=sim)
        assert np.array_equal(fast, fast.T) and not np.diag(fast).any()


def test_common_item_kernel_float32_and_rejects_bad_arguments():
    X, (u, i, r, n_u, n_i), _, _ = random_problem(seed=8)
    M = rating_matrix(u, i, r, n_u, n_i, np.float32)
    for sim in ('msd', 'pearson'):
        np.testing.assert_allclose(common_item_similarity(M, sim, 10.0, np.float32),
                                   common_item_similarity_reference(M, sim, 10.0, np.float64), atol=1e-5)
    with pytest.raises(ValueError, match='sim must be one of'): common_item_similarity(M, 'jaccard')
    with pytest.raises(ValueError, match='shrinkage'): common_item_similarity(M, 'msd', -1.0)


@pytest.mark.parametrize('positive_only', [True, False])
def test_heap_topk_with_ties_and_negative_similarities(positive_only):
    # similarities on a coarse grid: many ties, which go to the lower neighbour index
    rng = np.random.default_rng(9)
    n_t, n_c = 40, 15
    S = np.round(rng.uniform(-1, 1, (n_t, n_t)) * 3) / 3; S = (S + S.T) / 2; np.fill_diagonal(S, 0)
    by_col = sp.random(n_c, n_t, density=0.5, random_state=9, format='csr'); by_col.data = np.round(by_col.data * 4 + 1)
    rows, cols = rng.integers(0, n_t, 300), rng.integers(0, n_c, 300)
    for k in (1, 3, 8, 100):
        num, den, cnt = pair_sums(S, by_col, rows, cols, k, positive_only)
        for p, (a, c) in enumerate(zip(rows, cols)):
            nb, v = by_col.indices[by_col.indptr[c]:by_col.indptr[c + 1]], by_col.data[by_col.indptr[c]:by_col.indptr[c + 1]]
            cand = [(abs(S[a, b]), b, S[a, b] * x) for b, x in zip(nb, v)
                    if b != a and S[a, b] != 0 and (S[a, b] > 0 or not positive_only)]
            best = sorted(cand, key=lambda t: (-t[0], t[1]))[:k]
            assert cnt[p] == len(best)
            assert num[p] == pytest.approx(sum(t[2] for t in best), abs=1e-12)
            assert den[p] == pytest.approx(sum(t[0] for t in best), abs=1e-12)
