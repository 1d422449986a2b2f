"""Tests for thu_big_data_ml.latent: power iteration vs eigsh, Hellinger is a metric, CKA invariances,
WARP beats random and matches its plain-Python reference, SVD completion vs a dense reference."""
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh, svds

from thu_big_data_ml.latent import *
from conftest import random_distributions


def sparse_psd(n_rows=400, n_cols=150, density=0.04, seed=0):
    b = sp.random(n_rows, n_cols, density=density, random_state=seed, format='csr')
    return b, (b.T @ b).tocsr()


def eigsh_sorted(a, k):
    w, v = eigsh(a, k=k, which='LM')
    o = np.argsort(-np.abs(w))
    return w[o], v[:, o]


# ---------------------------------------------------------------- power iteration

@pytest.mark.parametrize('seed', [0, 1, 2])
def test_power_iteration_matches_eigsh_on_sparse_with_deflation(seed):
    _, a = sparse_psd(seed=seed)
    k = 5
    w, v = eigsh_sorted(a, k)
    r = power_iteration(a, k=k, tol=1e-10)
    assert sp.issparse(a)
    np.testing.assert_allclose(r.values, w, rtol=1e-6)
    for j in range(k):
        assert vector_angle(r.vectors[:, j], v[:, j]) < 1e-4, (j, r.iterations)
    np.testing.assert_allclose(r.vectors.T @ r.vectors, np.eye(k), atol=1e-5)    # deflation gives orthogonal vectors


def test_power_iteration_symmetric_indefinite_sparse():
    rng = np.random.default_rng(3)
    n = 120
    q = np.linalg.qr(rng.normal(size=(n, n)))[0]
    lam = np.concatenate([[10.0, -7.0, 5.0, -3.5], rng.uniform(-1, 1, n - 4)])
    a = sp.csr_matrix(np.round((q * lam) @ q.T, 10))
    a = (a + a.T) / 2
    w, v = eigsh_sorted(a, 4)
    r = power_iteration(a, k=4, tol=1e-11)
    np.testing.assert_allclose(r.values, w, rtol=1e-6)
    assert max(vector_angle(r.vectors[:, j], v[:, j]) for j in range(4)) < 1e-4


def test_gram_operator_matches_svds():
    b, _ = sparse_psd(seed=4)
    r = power_iteration(gram_operator(b), k=3, tol=1e-10)
    u, s, vt = svds(b, k=3)
    o = np.argsort(-s)
    np.testing.assert_allclose(r.values, s[o] ** 2, rtol=1e-6)
    for j in range(3):
        assert vector_angle(r.vectors[:, j], vt[o][j]) < 1e-4
    rl = power_iteration(gram_operator(b, side='left'), k=1, tol=1e-10)
    assert vector_angle(rl.vectors[:, 0], u[:, o[0]]) < 1e-4


def test_power_iteration_jax_matches_numpy():
    import jax.experimental.sparse as jsparse
    b, a = sparse_psd(n_rows=200, n_cols=60, density=0.1, seed=5)
    r = power_iteration(a, k=3, tol=1e-11)
    w_j, v_j = power_iteration_jax(a.toarray().astype(np.float32), k=3, n_iter=3000)
    w_g, v_g = power_iteration_jax(jsparse.BCOO.from_scipy_sparse(b.astype(np.float32)), k=3, n_iter=3000, gram=True)
    for vals, vecs in ((w_j, v_j), (w_g, v_g)):
        np.testing.assert_allclose(vals, r.values, rtol=1e-4)
        assert max(vector_angle(vecs[:, j], r.vectors[:, j]) for j in range(3)) < 1e-3


def test_power_iteration_bad_input():
    with pytest.raises(ValueError, match='square'):
        power_iteration(sp.random(5, 4, density=0.5, format='csr'))
    with pytest.raises(ValueError, match='symmetric'):
        power_iteration(np.array([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match='k must be'):
        power_iteration(np.eye(3), k=4)
    with pytest.raises(TypeError):
        power_iteration([[1, 0], [0, 1]])


def test_recommend_from_eigenvectors_book_example():
    s = np.array([[-0.375782, 0.40269807], [-0.753597, 0.0482972], [0.2040088, 0.91405433], [-0.49925917, -0.00250015]])
    scores, items = recommend_from_eigenvectors(s, np.array([-1, -1, 0, 0]), top=3)
    np.testing.assert_array_equal(items, [2, 0, 3])
    np.testing.assert_allclose(scores, [0.2040088, -0.375782, -0.49925917], rtol=1e-6)
    _, items = recommend_from_eigenvectors(s, np.array([-1, -1, 0, 0]), top=2, seen=np.array([1, 1, 0, 0]))
    np.testing.assert_array_equal(items, [2, 3])
    # the batched scorer ranks the same way
    np.testing.assert_array_equal(np.argsort(-eigen_scores(s, np.array([[-1, -1, 0, 0]]))[0])[:3], [2, 0, 3])


# ---------------------------------------------------------------- Hellinger



@pytest.mark.parametrize('seed', range(5))
def test_hellinger_is_a_metric(seed):
    rng = np.random.default_rng(seed)
    p = random_distributions(rng, 40, 12)
    h = hellinger_pairwise(p)
    assert np.all(h >= 0) and np.all(h <= 1 + 1e-12)                                   # bounds
    np.testing.assert_allclose(h, h.T, atol=1e-12)                                      # symmetry
    np.testing.assert_allclose(np.diag(h), 0, atol=1e-7)                                # d(p, p) = 0
    off = h[~np.eye(len(p), dtype=bool)]
    assert off.min() > 0                                                                # distinct -> positive
    tri = h[:, :, None] + h[None, :, :] - h[:, None, :].transpose(0, 2, 1)              # h[i,j] + h[j,k] - h[i,k]
    assert tri.min() >= -1e-7                                                           # triangle inequality
    # the pairwise fast path equals the norm formula, dense and sparse
    np.testing.assert_allclose(h, hellinger_pairwise_reference(p), atol=1e-7)
    np.testing.assert_allclose(hellinger_pairwise(sp.csr_matrix(p)), h, atol=1e-12)
    np.testing.assert_allclose(hellinger(p[:, None, :], p[None, :, :]), hellinger_pairwise_reference(p), atol=1e-12)


def test_hellinger_extremes_and_errors():
    assert hellinger([1, 0, 0], [0, 0.5, 0.5]) == pytest.approx(1.0)                  # disjoint supports
    assert hellinger([0.2, 0.8], [0.2, 0.8]) == pytest.approx(0.0)
    assert hellinger([0.5, 0.5], [1.0, 0.0]) == pytest.approx(np.sqrt(1 - np.sqrt(0.5)))
    with pytest.raises(ValueError, match='sum to 1'):
        hellinger([0.5, 0.6], [0.5, 0.5])
    with pytest.raises(ValueError, match='non-negative'):
        hellinger_pairwise(np.array([[1.5, -0.5]]))


def test_cooccurrence_pmi_distribution():
    b = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1], [1, 0, 0]], float))
    c = cooccurrence(b)
    np.testing.assert_array_equal(c.toarray(), [[0, 2, 1], [2, 0, 2], [1, 2, 0]])
    counts = np.asarray(b.sum(0)).ravel()                                              # 3, 3, 2 baskets
    m = pmi(c, counts, n_total=4, positive=False).toarray()
    assert m[0, 1] == pytest.approx(np.log(2 * 4 / (3 * 3)))
    assert m[1, 2] == pytest.approx(np.log(2 * 4 / (3 * 2)))
    assert pmi(c, counts, 4).toarray().min() >= 0                                      # PPMI clips
    cd = cooccurrence_distribution(c)
    np.testing.assert_allclose(np.asarray(cd.sum(1)).ravel(), 1)


# ---------------------------------------------------------------- CKA

@pytest.mark.parametrize('seed', range(3))
def test_cka_invariances(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(80, 6)) @ rng.normal(size=(6, 6))
    y = rng.normal(size=(80, 4)) + x[:, :4]
    q = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    base = linear_cka(x, y)
    assert 0 < base < 1
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-10)                      # orthogonal transform
    assert linear_cka(7.5 * x, 0.1 * y) == pytest.approx(base, abs=1e-10)              # isotropic scaling
    assert linear_cka(x + 3.0, y) == pytest.approx(base, abs=1e-10)                    # translation (centering)
    assert linear_cka(x, x @ q * 2) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, y) == pytest.approx(linear_cka_reference(x, y), abs=1e-10)    # fast == Gram-matrix form
    # not invariant to an anisotropic rescaling: the test can fail
    assert abs(linear_cka(x * np.array([10, 1, 1, 1, 1, 0.1]), y) - base) > 1e-3


def test_cka_matrix_and_errors():
    rng = np.random.default_rng(0)
    e = {'a': rng.normal(size=(30, 3)), 'b': rng.normal(size=(30, 5))}
    m = cka_matrix(e)
    np.testing.assert_allclose(np.diag(m.values), 1)
    np.testing.assert_allclose(m.values, m.values.T)
    with pytest.raises(ValueError, match='same number of rows'):
        linear_cka(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match='constant'):
        linear_cka(np.ones((5, 2)), rng.normal(size=(5, 2)))


# ---------------------------------------------------------------- WARP

def clustered_likes(n_users=300, n_items=200, n_clusters=5, seed=0):
    rng = np.random.default_rng(seed)
    cu, ci = rng.integers(0, n_clusters, n_users), rng.integers(0, n_clusters, n_items)
    x = (rng.random((n_users, n_items)) < np.where(cu[:, None] == ci[None, :], 0.2, 0.01)).astype(np.float32)
    held = rng.random(x.shape) < 0.2
    return sp.csr_matrix(x * ~held), sp.csr_matrix(x * held)


def test_warp_improves_over_random():
    train, test = clustered_likes()
    m = fit_warp(train, k=16, epochs=10, lr=0.02, seed=0, progress=False)
    rng = np.random.default_rng(0)
    warp = ranking_metrics(lambda u: m.scores(train[u]), train, test, ks=(10,))
    rand = ranking_metrics(lambda u: rng.random((len(u), train.shape[1])), train, test, ks=(10,))
    assert warp['recall@10'] > 3 * rand['recall@10'], (warp, rand)
    assert warp['ndcg@10'] > 3 * rand['ndcg@10']
    h = m.history
    assert h.loss.iloc[-1] < h.loss.iloc[0]                                            # training reduces the WARP loss
    assert m.P.shape == m.Q.shape == (train.shape[1], 16)


def test_warp_numba_equals_python_reference():
    train, _ = clustered_likes(n_users=30, n_items=40, seed=1)
    a = fit_warp(train, k=4, epochs=2, seed=3, fast=True, progress=False)
    b = fit_warp(train, k=4, epochs=2, seed=3, fast=False, progress=False)
    np.testing.assert_allclose(a.P, b.P, atol=1e-6)
    np.testing.assert_allclose(a.Q, b.Q, atol=1e-6)
    np.testing.assert_allclose(a.history.loss, b.history.loss, rtol=1e-9)


def test_warp_early_stopping_and_errors():
    train, test = clustered_likes(n_users=100, n_items=60, seed=2)
    m = fit_warp(train, k=4, epochs=3, seed=0, val=test, progress=False)
    assert 'val_recall@10' in m.history and len(m.history) == 3
    with pytest.raises(ValueError, match='no liked items'):
        fit_warp(sp.csr_matrix((3, 4)), progress=False)
    with pytest.raises(ValueError, match='positive'):
        fit_warp(sp.csr_matrix(-np.ones((3, 4))), progress=False)


# ---------------------------------------------------------------- completion, ranking, calibration

def test_low_rank_book_example():
    a = np.array([[1, 0, 0, 1], [1, 0, 0, 0], [0, 1, 1, 0], [0, 1, 0, 0]])
    b = low_rank(a, 2)
    np.testing.assert_allclose(b, [[1.17082039, 0, 0, 0.7236068], [0.7236068, 0, 0, 0.4472136],
                                   [0, 1.17082039, 0.7236068, 0], [0, 0.7236068, 0.4472136, 0]], atol=1e-7)
    with pytest.raises(ValueError):
        low_rank(a, 5)


def test_hard_impute_operator_equals_dense_reference():
    rng = np.random.default_rng(0)
    n, m, k = 30, 20, 3
    full = rng.normal(size=(n, k)) @ rng.normal(size=(k, m)) + 3
    mask = rng.random((n, m)) < 0.5
    r = sp.csr_matrix(np.where(mask, full, 0))
    model = fit_svd(r, k=k, fill='baseline', n_impute=4)
    # dense reference: impute, truncate, re-impute, with the same baseline
    mu, bu, bi = fit_baseline(r)
    base = mu + bu[:, None] + bi[None, :]
    z = np.where(mask, full - base, 0.0)
    low = low_rank(z, k)
    for _ in range(4):
        low = low_rank(np.where(mask, full - base, low), k)
    np.testing.assert_allclose(model.U @ model.V.T, low, atol=1e-4)
    uu, ii = np.nonzero(~mask)
    np.testing.assert_allclose(model.predict(uu, ii), (base + low)[uu, ii], atol=1e-4)


def test_svd_model_protocol_fallback_and_errors():
    "Unseen users / items get mu + the seen side's bias (fill='zero': the training mean), counted; bad ids raise."
    rng = np.random.default_rng(1)
    n, m = 25, 18
    mask = rng.random((n, m)) < 0.5
    mask[3] = False; mask[:, 4] = False                      # user 3 and item 4 have no training rating
    r = sp.csr_matrix(np.where(mask, rng.integers(1, 6, (n, m)), 0).astype(float))
    uu, ii = np.array([3, 0, 3, 1]), np.array([0, 4, 4, 1])
    for fill in ('baseline', 'zero'):
        model = fit_svd(r, k=3, fill=fill, n_impute=2 if fill == 'baseline' else 0)
        p = model.predict(uu, ii)
        assert model.info_ == {'pairs': 4, 'unseen_user': 2, 'unseen_item': 2, 'fallback': 3}
        if fill == 'zero':
            np.testing.assert_allclose(p[:3], r.data.mean())
        else:
            np.testing.assert_allclose(p[:3], [model.mu + model.bi[0], model.mu + model.bu[0], model.mu], rtol=1e-6)
        assert np.isfinite(p).all() and model.predict([], []).shape == (0,)
        with pytest.raises(ValueError, match='indices must lie'): model.predict([n], [0])
        with pytest.raises(TypeError, match='integers'): model.predict([0.5], [0])
        with pytest.raises(ValueError, match='one length'): model.predict([0, 1], [0])


def test_fit_svd_errors():
    r = sp.random(10, 8, density=0.5, format='csr', random_state=0)
    with pytest.raises(ValueError, match='fill'):
        fit_svd(r, k=2, fill='mean')
    with pytest.raises(ValueError, match='k must be'):
        fit_svd(r, k=8)
    with pytest.raises(TypeError):
        as_csr('ratings.txt')


def test_ranking_metrics_by_hand():
    train = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 1]], float))
    test = sp.csr_matrix(np.array([[0, 1, 0, 1, 0], [1, 0, 0, 0, 0]], float))
    scores = np.array([[9, 5, 4, 1, 0], [0, 1, 2, 3, 9]], float)    # user 0 ranks 1, 2, 3, ...; user 1 ranks 3, 2, 1, 0
    out = ranking_metrics(lambda u: scores[u], train, test, ks=(2,))
    # user 0: top-2 = [1, 2] -> 1 hit of min(2, 2); user 1: top-2 = [3, 2] -> 0 hits
    assert out['recall@2'] == pytest.approx((0.5 + 0) / 2)
    assert out['ndcg@2'] == pytest.approx((1 / (1 + 1 / np.log2(3)) + 0) / 2)
    np.testing.assert_array_equal(topk_items(scores, 2, train), [[1, 2], [3, 2]])


def test_logistic_link_recovers_parameters_and_calibrates():
    rng = np.random.default_rng(0)
    s = rng.normal(size=20000) * 3
    y = (rng.random(s.size) < sigmoid(1.7 * s - 2.0)).astype(float)
    a, b = fit_logistic_link(s, y)
    assert a == pytest.approx(1.7, abs=0.1) and b == pytest.approx(-2.0, abs=0.1)
    cal = calibration_metrics(sigmoid(a * s + b), y)
    raw = calibration_metrics(sigmoid(s), y)
    assert cal['ece'] < 0.02 < raw['ece'] and cal['log_loss'] < raw['log_loss']
    a2, b2 = fit_logistic_link(s * 1e6, y)                                             # any score scale converges
    assert a2 * 1e6 == pytest.approx(a, rel=1e-6)
    with pytest.raises(ValueError, match='both classes'):
        fit_logistic_link(s, np.zeros_like(s))


def test_norm_scaled_scores_interpolates_dot_and_cosine():
    rng = np.random.default_rng(0)
    q, v = rng.normal(size=(3, 4)), rng.normal(size=(10, 4))
    np.testing.assert_allclose(norm_scaled_scores(q, v, 0), q @ v.T, rtol=1e-5)
    cos = cosine_similarity_matrix(q, v)
    np.testing.assert_array_equal(np.argsort(-norm_scaled_scores(q, v, 1), axis=1), np.argsort(-cos, axis=1))


def test_reduce_2d_and_quality():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) + 6])
    from scipy.spatial.distance import cdist
    d = cdist(x, x)
    for method in ('pca', 'mds'):
        y = reduce_2d(x, method)
        q = embedding_quality(d, y, n_neighbors=5)
        assert y.shape == (60, 2) and 0 <= q['stress'] < 0.6 and q['trustworthiness'] > 0.7
    assert kruskal_stress(d, x[:, :2] * 0) == pytest.approx(1.0)                       # no information -> stress 1
    with pytest.raises(ValueError, match='non-negative'):
        reduce_2d(x, 'nmf')


def _ranking_reference(score_fn, train, test, ks):
    "Plain per-user loops: recall@K and NDCG@K (binary gains), train items excluded, the positives of `test`."
    tr, te = sp.csr_matrix(train), sp.csr_matrix(test)
    out = {f'{m}@{k}': [] for k in ks for m in ('recall', 'ndcg')}
    for u in range(tr.shape[0]):
        pos = set(te.indices[te.indptr[u]:te.indptr[u + 1]])
        if not pos: continue
        s = np.array(score_fn(np.array([u]))[0], float); s[tr.indices[tr.indptr[u]:tr.indptr[u + 1]]] = -np.inf
        order = sorted(range(len(s)), key=lambda j: (-s[j], j))
        for k in ks:
            hits = [order[r] in pos for r in range(k)]
            out[f'recall@{k}'].append(sum(hits) / min(k, len(pos)))
            dcg = sum(1 / np.log2(r + 2) for r, h in enumerate(hits) if h)
            out[f'ndcg@{k}'].append(dcg / sum(1 / np.log2(r + 2) for r in range(min(k, len(pos)))))
    return {k: float(np.mean(v)) for k, v in out.items()}


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_ranking_metrics_vectorised_equals_per_user_loops(seed):
    rng = np.random.default_rng(seed)
    tr = sp.random(40, 60, 0.15, format='csr', random_state=seed)
    te = sp.random(40, 60, 0.08, format='csr', random_state=seed + 7)
    te = (te - te.multiply(tr > 0)).tocsr(); te.eliminate_zeros()
    S = rng.normal(size=(40, 60))                                     # continuous scores: no ties
    got = ranking_metrics(lambda u: S[u], tr, te, ks=(3, 10), batch=7)
    ref = _ranking_reference(lambda u: S[u], tr, te, ks=(3, 10))
    for key, v in ref.items(): assert np.isclose(got[key], v, rtol=1e-12), key


# ---------------------------------------------------------------- UMAP: the NumPy kNN lent to umap-learn

def test_knn_indices_equal_umap_numba_kernel_and_umap_2d_equals_plain_umap():
    "Issue 17: `_knn_indices` = umap-learn's `fast_knn_indices` (ties, inf); `umap_2d` = an unpatched UMAP, bit for bit."
    import umap
    import umap.umap_ as uu
    from scipy.spatial.distance import cdist
    from thu_big_data_ml.latent import _knn_indices, umap_2d
    r = np.random.default_rng(3)
    d = np.round(r.random((40, 40)), 1); d[3, 5] = np.inf                   # many ties and one disconnected pair
    np.testing.assert_array_equal(_knn_indices(d, 7), uu.fast_knn_indices(d, 7))
    x = r.normal(size=(70, 5)); dx = cdist(x, x)
    for inp, pre in ((x, False), (dx, True)):
        plain = umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.1, random_state=0, n_jobs=1,
                          metric='precomputed' if pre else 'euclidean').fit_transform(inp)
        np.testing.assert_array_equal(umap_2d(inp, precomputed=pre, seed=0), plain)
    assert uu.fast_knn_indices is not _knn_indices                           # umap-learn gets its kernel back
