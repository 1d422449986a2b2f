"""Tests for the rest of the latent-space toolbox: KL / TV / smoothed TV properties (thu_big_data_ml.divergence),
fold-in = one ALS half-step for the new rows (thu_big_data_ml.foldin), UMAP / kernel PCA / kernel MDS maps
(latent.reduce_2d), and the latent-space hyperparameter search (thu_big_data_ml.latent_hpo)."""
import pickle

import numpy as np
import pytest

from thu_big_data_ml.divergence import *
from conftest import random_distributions




# ---------------------------------------------------------------- KL and TV

@pytest.mark.parametrize('seed', range(4))
def test_kl_nonnegative_zero_on_equal_and_asymmetric(seed):
    rng = np.random.default_rng(seed)
    p = random_distributions(rng, 30, 15)
    k = kl_pairwise(p, eps=1e-6)
    assert (k >= 0).all()                                                              # Gibbs' inequality
    np.testing.assert_allclose(np.diag(k), 0, atol=1e-10)                              # KL(p || p) = 0
    off = ~np.eye(len(p), dtype=bool)
    assert k[off].min() > 0
    assert np.abs(k - k.T)[off].max() > 1e-2                                           # asymmetric on real inputs
    # the pairwise matrix product equals the row-by-row formula
    np.testing.assert_allclose(k, [[kl_divergence(a, b, 1e-6)[0] for b in p] for a in p], atol=1e-10)
    p2 = np.array([[0.5, 0.5, 0.0]]); q2 = np.array([[0.9, 0.05, 0.05]])
    assert kl_divergence(p2, q2, eps=0)[0] == pytest.approx(0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.05))
    assert kl_divergence(q2, p2, eps=0)[0] == np.inf                                   # q_k = 0 < p_k
    assert np.isfinite(kl_divergence(q2, p2, eps=1e-6)[0])                             # smoothing makes it finite


def test_kl_is_not_a_metric_tv_and_hellinger_are():
    from thu_big_data_ml.latent import hellinger_pairwise
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]) * (1 - 2e-2) + 1e-2           # a small, classic violation
    k = kl_pairwise(p, eps=0.0 + 1e-12)
    assert k[0, 2] > k[0, 1] + k[1, 2]                                                 # d(0,2) > d(0,1) + d(1,2)
    v = triangle_violations(k)
    assert v['violations'] > 0 and v['worst'] in ((0, 1, 2), (2, 1, 0))
    rng = np.random.default_rng(1)
    q = random_distributions(rng, 40, 10)
    assert triangle_violations(tv_pairwise(q), tol=1e-12)['violations'] == 0
    assert triangle_violations(hellinger_pairwise(q), tol=1e-9)['violations'] == 0


@pytest.mark.parametrize('seed', range(4))
def test_tv_bounds_identity_symmetry_and_classical_inequalities(seed):
    from thu_big_data_ml.latent import hellinger_pairwise
    rng = np.random.default_rng(seed)
    p = random_distributions(rng, 25, 12)
    tv = tv_pairwise(p)
    assert (tv >= 0).all() and (tv <= 1).all()                                         # TV in [0, 1]
    np.testing.assert_allclose(np.diag(tv), 0, atol=1e-15)
    assert tv[~np.eye(len(p), dtype=bool)].min() > 0                                   # TV = 0 only if equal
    np.testing.assert_allclose(tv, tv.T, atol=1e-15)
    np.testing.assert_allclose(tv, [[tv_distance(a, b)[0] for b in p] for a in p], atol=1e-12)
    assert tv_distance([1, 0, 0], [0, 0.5, 0.5])[0] == pytest.approx(1.0)              # disjoint supports: 1
    h, kl = hellinger_pairwise(p), kl_pairwise(p, eps=1e-12)
    assert (h ** 2 <= tv + 1e-9).all() and (tv <= np.sqrt(2) * h + 1e-9).all()        # Le Cam
    assert (tv <= np.sqrt(kl / 2) + 1e-6).all()                                        # Pinsker


def test_smoothed_tv_converges_to_tv_and_is_smooth():
    rng = np.random.default_rng(0)
    p, q = random_distributions(rng, 20, 30), random_distributions(rng, 20, 30)
    tv = tv_distance(p, q)
    gaps = []
    for eps in (1e-1, 1e-2, 1e-3, 1e-4, 1e-6, 1e-9):
        g = tv - tv_smooth(p, q, eps)
        assert (g >= -1e-15).all() and (g <= p.shape[1] * eps / 2 + 1e-15).all()       # 0 <= TV - TV_eps <= d eps / 2
        gaps.append(g.max())
    assert all(a > b for a, b in zip(gaps, gaps[1:]))                                  # decreasing to 0
    assert gaps[-1] < 1e-7
    np.testing.assert_array_equal(tv_smooth(p, q, 0.0), tv)                            # eps = 0 is TV
    # smoothness at a kink: the derivative of TV jumps, the smoothed one does not
    a, b = np.array([0.6, 0.4]), np.array([0.2, 0.8])
    r = np.array([0.4, 0.6])                                                           # P_t crosses R at t = 0.5
    f = lambda fn, t: fn((1 - t) * a + t * b, r)[0]
    h = 1e-7
    d_tv = (f(tv_distance, 0.5 + h) - f(tv_distance, 0.5 - h)) / (2 * h)
    one_sided = (f(tv_distance, 0.5 + h) - f(tv_distance, 0.5)) / h, (f(tv_distance, 0.5) - f(tv_distance, 0.5 - h)) / h
    assert one_sided[0] - one_sided[1] == pytest.approx(0.8, abs=1e-6)                 # jump = sum |q - p| / 2 * 2
    sm = lambda t: tv_smooth((1 - t) * a + t * b, r, 1e-3)[0]
    left, right = (sm(0.5) - sm(0.5 - h)) / h, (sm(0.5 + h) - sm(0.5)) / h
    assert abs(right - left) < 1e-3 and abs(d_tv) < 1e-6


def test_divergence_bad_arguments():
    with pytest.raises(ValueError, match='sum to 1'):
        tv_distance([0.5, 0.6], [0.5, 0.5])
    with pytest.raises(ValueError, match='non-negative'):
        kl_divergence([1.5, -0.5], [0.5, 0.5])
    with pytest.raises(ValueError, match='NaN'):
        tv_pairwise(np.array([[np.nan, 1.0]]))
    with pytest.raises(TypeError, match='numeric'):
        smooth(np.array([[True, False]]), 0.1)
    with pytest.raises(ValueError, match='eps'):
        tv_smooth([1.0, 0.0], [0.0, 1.0], -1e-3)
    with pytest.raises(ValueError, match='eps > 0'):
        kl_pairwise(np.eye(3), eps=0.0)
    with pytest.raises(ValueError, match='entries per row'):
        tv_distance([1.0, 0.0], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match='square'):
        triangle_violations(np.zeros((3, 4)))
    with pytest.raises(ValueError, match='row 1 sums'):
        tv_pairwise(np.array([[1.0, 0.0], [0.0, 0.0]]))                                # an empty co-occurrence row


# ---------------------------------------------------------------- fold-in

from thu_big_data_ml.foldin import factor_basis, fold_in, ridge_rows
from thu_big_data_ml.metrics import evaluate


def _split_users(tr, new_users):
    m = np.isin(tr.user, new_users)
    return tr.subset(np.flatnonzero(~m)), tr.subset(np.flatnonzero(m))


@pytest.mark.parametrize('backend', ['numpy', 'numba'])
def test_fold_in_equals_one_als_half_step_unbiased(low_rank, backend):
    "Fold-in of new users = the user half of one ALS sweep of fit_mf started from the model's items."
    from thu_big_data_ml.mf import fit_mf
    tr = low_rank.train
    new = np.arange(0, 57, 4)
    base_tr, new_tr = _split_users(tr, new)
    base = fit_mf(base_tr, k=3, lam=0.7, method='als', max_iter=20, backend=backend, progress=False)
    assert (base.user_count[new] == 0).all()
    fo = fold_in(base, new_tr)
    ref = fit_mf(tr, k=3, lam=0.7, method='als', max_iter=1, tol=0.0, backend=backend, init=(base.U, base.V),
                 progress=False)                                                       # U-step uses base.V
    np.testing.assert_allclose(fo.U[new], ref.U[new], atol=1e-6)
    np.testing.assert_array_equal(fo.U[np.setdiff1d(np.arange(tr.n_users), new)],
                                  base.U[np.setdiff1d(np.arange(tr.n_users), new)])   # the others are untouched
    np.testing.assert_array_equal(fo.V, base.V)
    assert (fo.user_count[new] == np.bincount(new_tr.user, minlength=tr.n_users)[new]).all()


def test_fold_in_equals_one_als_half_step_biased(low_rank):
    "Biased model: (u, b_u) of the fold-in = the ALS user step of the reference engine with mu, b_i, V fixed."
    from thu_big_data_ml.mf import _NumpyEngine, _as_obs, fit_mf
    tr = low_rank.train
    new = np.arange(1, 57, 5)
    base_tr, new_tr = _split_users(tr, new)
    base = fit_mf(base_tr, k=4, lam=0.5, method='als', biased=True, max_iter=20, progress=False)
    for reg in ('uniform',):
        fo = fold_in(base, new_tr)
        P = {'U': base.U.copy(), 'V': base.V.copy(), 'bu': base.bu.copy(), 'bi': base.bi.copy()}
        eng = _NumpyEngine(_as_obs(tr), P, 0.5, base.mu, True, reg)
        eng.als_sweep()                                                                # U-step first, with V, bi fixed
        np.testing.assert_allclose(fo.U[new], eng.P['U'][new], atol=1e-6)
        np.testing.assert_allclose(fo.bu[new], eng.P['bu'][new], atol=1e-6)
    # and the direct normal equations of J for one user
    u = new[0]; m = new_tr.user == u
    Z = np.hstack([base.V[new_tr.item[m]].astype(np.float64), np.ones((m.sum(), 1))])
    t = new_tr.rating[m] - base.mu - base.bi[new_tr.item[m]]
    x = np.linalg.solve(Z.T @ Z + 2 * 0.5 * np.eye(5), Z.T @ t)
    np.testing.assert_allclose(np.r_[fo.U[u], fo.bu[u]], x, atol=1e-6)


def test_fold_in_items_mirror_and_basis(low_rank):
    from thu_big_data_ml.mf import fit_mf
    tr = low_rank.train
    new_items = np.arange(0, 37, 6)
    m = np.isin(tr.item, new_items)
    base = fit_mf(tr.subset(np.flatnonzero(~m)), k=3, lam=0.7, method='als', max_iter=20, progress=False)
    fo = fold_in(base, tr.subset(np.flatnonzero(m)), side='item')
    ref = fit_mf(tr, k=3, lam=0.7, method='als', max_iter=1, tol=0.0, init=(base.U, base.V), progress=False)
    # the item step of the sweep uses the *new* U, so compare with the closed form instead
    Vn, _ = ridge_rows(base.U, tr.user[m], tr.item[m], tr.rating[m].astype(np.float64), tr.n_items, 0.7, False)
    np.testing.assert_allclose(fo.V[new_items], Vn[new_items], atol=1e-6)
    assert ref.V.shape == fo.V.shape
    # full basis = no basis; a rank-r basis keeps every user vector in its span
    B = factor_basis(base.V, 3)
    np.testing.assert_allclose(fold_in(base, tr, basis=B).U, fold_in(base, tr).U, atol=1e-5)
    B2 = factor_basis(base.V, 2)
    U2 = fold_in(base, tr, basis=B2).U
    np.testing.assert_allclose(U2 - (U2 @ B2) @ B2.T, 0, atol=1e-6)
    np.testing.assert_allclose(B2.T @ B2, np.eye(2), atol=1e-10)
    assert factor_basis(base.V, 2, center=True).shape == (3, 2)


def test_fold_in_protocol_and_bad_arguments(low_rank):
    from thu_big_data_ml.mf import fit_mf
    tr, te = low_rank.train, low_rank.test
    new = np.arange(0, 57, 3)
    base_tr, new_tr = _split_users(tr, new)
    base = fit_mf(base_tr, k=3, lam=1.0, method='als', biased=True, max_iter=20, progress=False)
    fo = fold_in(base, new_tr)
    assert evaluate(fo, te)['rmse'] < evaluate(base, te)['rmse']                       # folding in helps
    fo.predict(low_rank.cold_users, low_rank.warm_items[:3])
    assert fo.info_['unseen_user'] == 3                                                # still unseen: no ratings
    assert pickle.loads(pickle.dumps(fo)).predict([0], [0]) == pytest.approx(fo.predict([0], [0]))
    assert fo.config['fold_in']['rows'] == len(new)
    with pytest.raises(ValueError, match="side"):
        fold_in(base, new_tr, side='both')
    with pytest.raises(ValueError, match='indices must lie'):
        fold_in(base, (np.array([tr.n_users]), np.array([0]), np.array([3.0])))
    with pytest.raises(ValueError, match='NaN'):
        fold_in(base, (np.array([0]), np.array([0]), np.array([np.nan])))
    with pytest.raises(ValueError, match='lam > 0'):
        fold_in(base, new_tr, lam=0.0)
    with pytest.raises(ValueError, match='orthonormal'):
        fold_in(base, new_tr, basis=np.ones((3, 2)))
    with pytest.raises(ValueError, match='k x r'):
        fold_in(base, new_tr, basis=np.eye(4)[:, :2])
    with pytest.raises(TypeError, match='MFModel'):
        fold_in(object(), new_tr)
    with pytest.raises(ValueError, match='r must be'):
        factor_basis(base.V, 0)


# ---------------------------------------------------------------- UMAP, kernel PCA, kernel MDS maps

def _blobs(seed=0, n=40):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(size=(n, 6)), rng.normal(size=(n, 6)) + 5])


def test_kernel_pca_and_kernel_mds_shapes_determinism_and_classical_equals_pca():
    from scipy.spatial.distance import cdist
    from thu_big_data_ml.latent import embedding_quality, reduce_2d
    x = _blobs()
    d = cdist(x, x)
    for method, arg, kw in (('kpca', x, {}), ('kmds', d, {'precomputed': True}),
                            ('kmds', d, {'precomputed': True, 'kernel': 'rbf'}), ('kmds', x, {})):
        y = reduce_2d(arg, method, seed=0, **kw)
        assert y.shape == (80, 2) and np.isfinite(y).all()
        np.testing.assert_array_equal(y, reduce_2d(arg, method, seed=0, **kw))           # deterministic
        assert embedding_quality(d, y, n_neighbors=5)['trustworthiness'] > 0.7
    # classical kernel MDS of Euclidean distances = PCA of the points, up to the sign of each axis
    y_k, y_p = reduce_2d(d, 'kmds', precomputed=True), reduce_2d(x, 'pca')
    np.testing.assert_allclose(np.abs(y_k), np.abs(y_p), atol=1e-8)


def test_umap_shape_and_determinism_with_a_seed():
    from scipy.spatial.distance import cdist
    from thu_big_data_ml.latent import embedding_quality, reduce_2d
    x = _blobs(1)
    a, b = reduce_2d(x, 'umap', seed=0), reduce_2d(x, 'umap', seed=0)
    assert a.shape == (80, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)                                                  # same seed, same map
    assert not np.allclose(a, reduce_2d(x, 'umap', seed=1))                              # another seed, another map
    d = cdist(x, x)
    p = reduce_2d(d, 'umap', precomputed=True, seed=0)
    assert p.shape == (80, 2) and embedding_quality(d, p, n_neighbors=5)['trustworthiness'] > 0.8


def test_reduce_2d_new_methods_bad_arguments():
    from thu_big_data_ml.latent import reduce_2d
    x = _blobs(2, n=10)
    with pytest.raises(ValueError, match='method must be one of'):
        reduce_2d(x, 'isomap')
    with pytest.raises(ValueError, match='cannot use precomputed'):
        reduce_2d(x, 'kpca', precomputed=True)
    with pytest.raises(ValueError, match='square'):
        reduce_2d(x, 'kmds', precomputed=True)
    with pytest.raises(ValueError, match='symmetric'):
        reduce_2d(np.triu(np.ones((5, 5)), 1), 'umap', precomputed=True)
    with pytest.raises(ValueError, match='non-negative'):
        reduce_2d(-np.ones((4, 4)) + np.eye(4), 'kmds', precomputed=True)
    with pytest.raises(ValueError, match="kernel must be"):
        reduce_2d(x, 'kmds', kernel='poly')
    with pytest.raises(ValueError, match='at least 3 points'):
        reduce_2d(x[:2], 'umap')


# ---------------------------------------------------------------- latent-space hyperparameter search

from thu_big_data_ml.latent_hpo import Param, nelder_mead_search, random_search, to_config

TOY_SPACE = [Param(f'x{j}', 0, 1) for j in range(5)]
def _toy(c): return (c['x0'] + c['x1'] - 1) ** 2 + 0.01 * sum((c[f'x{j}'] - 0.5) ** 2 for j in range(2, 5))


def test_param_mapping_and_config():
    p = Param('k', 2, 64, log=True, integer=True)
    assert p.value(0) == 2 and p.value(1) == 64 and p.value(0.5) == 11 and p.value(7) == 64   # clipped
    assert Param('lam', 0.01, 100, log=True).value(0.5) == pytest.approx(1.0)
    assert to_config([p, Param('a', -1, 1)], [0, 0.75]) == {'k': 2, 'a': 0.5}
    with pytest.raises(ValueError, match='low < high'):
        Param('x', 1, 1)
    with pytest.raises(ValueError, match='low > 0'):
        Param('x', 0, 1, log=True)
    with pytest.raises(ValueError, match='coordinates'):
        to_config([p], [0.1, 0.2])


@pytest.mark.parametrize('latent_dim', [None, 1, 2])
def test_searches_spend_exactly_the_budget_share_the_design_and_are_deterministic(latent_dim):
    calls = []
    def f(c): calls.append(c); return _toy(c)
    nm = nelder_mead_search(f, TOY_SPACE, 15, seed=3, n_init=6, latent_dim=latent_dim)
    assert len(nm) == 15 == len(calls)                                                 # one fit per row, no more
    assert (nm['best so far'].diff().dropna() <= 0).all()
    rs = random_search(_toy, TOY_SPACE, 15, seed=3, n_init=6)
    cols = [p.name for p in TOY_SPACE]
    np.testing.assert_array_equal(nm[cols].iloc[:6].to_numpy(), rs[cols].iloc[:6].to_numpy())   # shared design
    pd_again = nelder_mead_search(_toy, TOY_SPACE, 15, seed=3, n_init=6, latent_dim=latent_dim)
    np.testing.assert_array_equal(nm[cols].to_numpy(), pd_again[cols].to_numpy())    # same seed, same search
    assert np.all((nm[cols].to_numpy() >= 0) & (nm[cols].to_numpy() <= 1))


def test_latent_search_beats_random_search_when_one_direction_matters():
    lat = [nelder_mead_search(_toy, TOY_SPACE, 25, seed=s, n_init=8, latent_dim=2).value.min() for s in range(8)]
    rnd = [random_search(_toy, TOY_SPACE, 25, seed=s, n_init=8).value.min() for s in range(8)]
    assert np.median(lat) < np.median(rnd) and sum(a <= b for a, b in zip(lat, rnd)) >= 6


def test_search_failed_fits_and_bad_arguments():
    nan_every_other = lambda c: np.nan if c['x0'] < 0.5 else _toy(c)
    df = nelder_mead_search(nan_every_other, TOY_SPACE, 10, seed=0, n_init=4)
    assert len(df) == 10 and np.isfinite(df.value.min())                               # a failed fit is +inf, not chosen
    with pytest.raises(ValueError, match='budget'):
        random_search(_toy, TOY_SPACE, 0)
    with pytest.raises(ValueError, match='n_init'):
        nelder_mead_search(_toy, TOY_SPACE, 5, n_init=6)
    with pytest.raises(ValueError, match='latent_dim'):
        nelder_mead_search(_toy, TOY_SPACE, 10, n_init=4, latent_dim=6)
    with pytest.raises(ValueError, match='top'):
        nelder_mead_search(_toy, TOY_SPACE, 10, n_init=4, top=0)
    with pytest.raises(ValueError, match='at least one'):
        random_search(_toy, [], 5)
