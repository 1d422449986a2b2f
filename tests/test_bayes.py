"Tests of thu_big_data_ml.bayes: compiled sampler = NumPy reference, posterior sanity, nested CV, bad arguments."
import numpy as np
import pandas as pd
import pytest

from thu_big_data_ml.data import Interactions
from thu_big_data_ml.bayes import fit_bayes_mf, normal_gamma_draw, nested_cv_bayes, BayesMFModel
from thu_big_data_ml.metrics import RATING_RANGE, evaluate, score


def make_data(n_users=60, n_items=45, density=0.35, rank=2, noise=0.3, seed=0, discrete=False) -> Interactions:
    r = np.random.default_rng(seed)
    A, B = r.normal(size=(n_users, rank)), r.normal(size=(n_items, rank))
    u, i = np.nonzero(r.random((n_users, n_items)) < density)
    x = 3.0 + 0.5 * (A[u] * B[i]).sum(1) + r.normal(0, noise, len(u))
    if discrete: x = np.clip(np.rint(x), 1, 5)
    return Interactions(u, i, x, None, n_users, n_items)


@pytest.fixture(scope='module')
def data():
    return make_data()


@pytest.mark.parametrize('implicit', [False, True])
def test_numba_chain_equals_numpy_reference(data, implicit):
    kw = dict(k=3, n_samples=8, burn_in=3, implicit=implicit, seed=5, val=data, progress=False)
    a = fit_bayes_mf(data, backend='numba', **kw)
    b = fit_bayes_mf(data, backend='numpy', **kw)
    np.testing.assert_allclose(a.history.train_rmse, b.history.train_rmse, rtol=1e-7)
    np.testing.assert_allclose(a.predict(data.user, data.item), b.predict(data.user, data.item), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.history.val_rmse.iloc[-1], b.history.val_rmse.iloc[-1], rtol=1e-6)


def test_same_seed_same_chain_other_seed_differs(data):
    kw = dict(k=3, n_samples=5, burn_in=1, progress=False)
    a, b, c = (fit_bayes_mf(data, seed=s, **kw) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.predict(data.user, data.item), b.predict(data.user, data.item))
    assert np.abs(a.predict(data.user, data.item) - c.predict(data.user, data.item)).max() > 1e-4


def test_posterior_recovers_noise_level_and_beats_single_samples():
    d = make_data(n_users=150, n_items=120, density=0.4, noise=0.3, seed=3)
    rng = np.random.default_rng(0)
    test = rng.random(len(d)) < 0.15
    tr, te = d.subset(np.flatnonzero(~test)), d.subset(np.flatnonzero(test))
    m = fit_bayes_mf(tr, k=4, n_samples=150, burn_in=50, val=te, clip=None, progress=False)
    # the sampled noise sd settles near the true 0.3 (train residuals are slightly smaller than the noise)
    assert 0.22 < m.history.noise_sd.iloc[-50:].mean() < 0.36
    post = evaluate(m, te, clip=None)['rmse']
    p_last = (m.W[-1][te.user] * m.V[-1][te.item]).sum(1) + m.mu + m.bu[-1][te.user] + m.bi[-1][te.item]
    single = float(np.sqrt(np.mean((p_last - te.rating) ** 2)))
    assert post < single                     # averaging over the posterior helps
    assert post < 0.45                       # close to the noise floor 0.3, far below the rating sd
    assert post < float(np.std(te.rating)) / 2
    # the running posterior mean on val and the thinned-sample mean agree closely
    assert abs(m.history.val_rmse.iloc[-1] - post) < 0.01


def test_history_and_thinning(data):
    m = fit_bayes_mf(data, k=2, n_samples=30, burn_in=10, keep=4, progress=False, val=data)
    assert len(m.history) == 30 and m.n_kept <= 4 and m.config['thin'] == 5
    assert m.history.val_rmse.iloc[:10].isna().all() and m.history.val_rmse.iloc[10:].notna().all()
    assert (np.diff(m.history.seconds) >= 0).all()
    p = m.predict(data.user[:5], data.item[:5])
    manual = np.mean([m.mu + m.bu[s][data.user[:5]] + m.bi[s][data.item[:5]] +
                      (m.W[s][data.user[:5]] * m.V[s][data.item[:5]]).sum(1) for s in range(m.n_kept)], axis=0)
    np.testing.assert_allclose(p, manual, rtol=1e-5)
    full = m.predict(data.user, data.item)                     # unclipped: clipping happens in metrics.score only
    assert full.dtype == np.float64 and np.isfinite(full).all()
    assert np.array_equal(full[:5], p) and score(full, data.rating)['clipped'] == int(((full < 1) | (full > 5)).sum())


def test_normal_gamma_draw_concentrates_on_truth():
    rng = np.random.default_rng(0)
    X = rng.normal(2.0, 0.5, size=(20000, 3))
    lam, mu = normal_gamma_draw(rng, X)
    np.testing.assert_allclose(mu, 2.0, atol=0.02)
    np.testing.assert_allclose(lam, 4.0, rtol=0.05)
    lam1, mu1 = normal_gamma_draw(rng, X[:, 0])
    assert lam1.shape == (1,) and mu1.shape == (1,)


def test_nested_cv_bayes_picks_from_grid_and_scores_every_fold():
    d = make_data(n_users=80, n_items=60, density=0.4, seed=4, discrete=True)
    grid = [{'k': 1}, {'k': 3}]
    tab = nested_cv_bayes(d, grid, n_folds=3, n_samples=20, burn_in=5, progress=False)
    assert list(tab.fold) == [0, 1, 2]
    assert set(tab.k) <= {1, 3}
    assert np.isfinite(tab.test_rmse).all() and (tab.test_rmse < 1.2).all()
    assert (tab.inner_val_rmse == tab[['inner 0', 'inner 1']].min(axis=1)).all()
    one = nested_cv_bayes(d, grid, n_folds=3, folds=[1], n_samples=20, burn_in=5, progress=False)
    assert one.test_rmse.iloc[0] == pytest.approx(tab.test_rmse.iloc[1])


@pytest.mark.parametrize('kw,match', [
    (dict(k=0), 'k must be'), (dict(k=2.5), 'k must be'), (dict(n_samples=0), 'n_samples'),
    (dict(n_samples=10, burn_in=10), 'burn_in'), (dict(burn_in=-1), 'burn_in'), (dict(keep=0), 'keep'),
    (dict(backend='cuda'), 'backend'),
])
def test_bad_arguments(data, kw, match):
    with pytest.raises(ValueError, match=match):
        fit_bayes_mf(data, progress=False, **{'n_samples': 5, 'burn_in': 1, **kw})


def test_bad_data(data):
    with pytest.raises(ValueError, match='NaN'):   # Interactions itself refuses NaN ...
        Interactions(data.user, data.item, np.where(np.arange(len(data)) == 3, np.nan, data.rating), None,
                     data.n_users, data.n_items)
    bad = data.subset(np.arange(len(data)))
    bad.rating[3] = np.nan                         # ... and the fit checks again after in-place edits
    with pytest.raises(ValueError, match='NaN'):
        fit_bayes_mf(bad, n_samples=3, burn_in=0, progress=False)
    with pytest.raises(ValueError, match='no ratings'):
        fit_bayes_mf(data.subset(np.array([], np.int64)), n_samples=3, burn_in=0, progress=False)
    other = Interactions(data.user, data.item, data.rating, None, data.n_users + 1, data.n_items)
    with pytest.raises(ValueError, match='val shape'):
        fit_bayes_mf(data, n_samples=3, burn_in=0, val=other, progress=False)
    with pytest.raises(TypeError):
        fit_bayes_mf(np.zeros((3, 3)), n_samples=3, burn_in=0, progress=False)
    m = fit_bayes_mf(data, k=2, n_samples=3, burn_in=0, progress=False)
    with pytest.raises(ValueError, match=r'in \[0, 60\)'):
        m.predict(np.array([data.n_users]), np.array([0]))
    with pytest.raises(ValueError, match='one length'):
        m.predict(np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match='inner_frac'):
        nested_cv_bayes(data, [{'k': 2}], inner_frac=1.0)
    with pytest.raises(ValueError, match='grid'):
        nested_cv_bayes(data, [])


def test_val_prediction_is_the_all_sample_posterior_mean(data):
    m = fit_bayes_mf(data, k=2, n_samples=25, burn_in=5, keep=3, progress=False, val=data)
    assert m.val_prediction.shape == (len(data),)
    rm = score(m.val_prediction, data.rating)['rmse']           # clipped to (1, 5), as the curve
    assert rm == pytest.approx(m.history.val_rmse.iloc[-1], rel=1e-9)
    assert fit_bayes_mf(data, k=2, n_samples=3, burn_in=1, progress=False).val_prediction is None


# --- issue 17: float32 kernels, chains started from the MAP fit, the MAP counterpart inside the nested CV -------------

@pytest.mark.parametrize('implicit', [False, True])
def test_float32_numba_chain_follows_float32_numpy_reference(data, implicit):
    kw = dict(k=3, n_samples=8, burn_in=3, implicit=implicit, seed=5, val=data, progress=False, dtype='float32')
    a = fit_bayes_mf(data, backend='numba', **kw)
    b = fit_bayes_mf(data, backend='numpy', **kw)
    # same draws; only the order of float32 sums differs (fastmath): agreement to single precision
    np.testing.assert_allclose(a.history.train_rmse, b.history.train_rmse, rtol=2e-4)
    np.testing.assert_allclose(a.predict(data.user, data.item), b.predict(data.user, data.item), atol=2e-3)


def _split(d, frac=0.15, seed=0):
    test = np.random.default_rng(seed).random(len(d)) < frac
    return d.subset(np.flatnonzero(~test)), d.subset(np.flatnonzero(test))


def test_map_start_float32_and_random_start_sample_the_same_posterior():
    d = make_data(n_users=150, n_items=120, density=0.4, noise=0.3, seed=3)
    tr, te = _split(d)
    from thu_big_data_ml.mf import fit_mf
    start = fit_mf(tr, k=6, lam=0.05, method='als', biased=True, reg='count', max_iter=10, progress=False)
    ref = fit_bayes_mf(tr, k=4, n_samples=400, burn_in=100, val=te, clip=None, seed=1, progress=False)
    fast = fit_bayes_mf(tr, k=4, n_samples=150, burn_in=20, val=te, clip=None, seed=2, progress=False, init=start,
                        dtype='float32')
    p_ref, p_fast = ref.val_prediction, fast.val_prediction
    # posterior means agree within Monte Carlo error (far below the noise sd 0.3), and so do the RMSEs
    assert np.sqrt(np.mean((p_ref - p_fast) ** 2)) < 0.05
    assert abs(ref.history.val_rmse.iloc[-1] - fast.history.val_rmse.iloc[-1]) < 0.01
    assert abs(ref.history.noise_sd.iloc[-50:].mean() - fast.history.noise_sd.iloc[-50:].mean()) < 0.02
    # the MAP start is already near the posterior: the first sweep's train RMSE is near its end value, not ~1
    assert fast.history.train_rmse.iloc[0] < ref.history.train_rmse.iloc[0]
    assert fast.history.train_rmse.iloc[0] < 1.3 * fast.history.train_rmse.iloc[-20:].mean()
    assert fast.config['dtype'] == 'float32' and fast.config['init'] == 'MFModel'


def test_start_from_cuts_to_best_rank_k_and_pads():
    from thu_big_data_ml.bayes import _start_from
    from types import SimpleNamespace
    r = np.random.default_rng(0)
    U0, V0 = r.normal(size=(20, 6)), r.normal(size=(15, 6))
    init = SimpleNamespace(U=U0, V=V0, mu=3.0, bu=np.ones(20), bi=np.zeros(15))
    U, V, bu, bi = _start_from(init, 3, 3.5, 20, 15, r, 0.1)
    X = U0 @ V0.T
    a, s, bt = np.linalg.svd(X)
    np.testing.assert_allclose(U @ V.T, (a[:, :3] * s[:3]) @ bt[:3], atol=1e-8)   # Eckart-Young: the best rank-3 part
    np.testing.assert_allclose(bu, 0.5)                                             # mu 3.0 + 1 around the chain's 3.5
    U, V, _, _ = _start_from(init, 8, 3.0, 20, 15, r, 0.1)
    assert U.shape == (20, 8) and np.array_equal(U[:, :6], U0) and np.abs(U[:, 6:]).max() < 1


def test_bad_init_and_dtype(data):
    from types import SimpleNamespace
    with pytest.raises(ValueError, match='init factors'):
        fit_bayes_mf(data, n_samples=3, burn_in=0, progress=False,
                     init=SimpleNamespace(U=np.zeros((data.n_users + 1, 2)), V=np.zeros((data.n_items, 2))))
    with pytest.raises(ValueError, match='init.bu'):
        fit_bayes_mf(data, n_samples=3, burn_in=0, progress=False,
                     init=SimpleNamespace(U=np.zeros((data.n_users, 2)), V=np.zeros((data.n_items, 2)), bu=np.zeros(3)))
    with pytest.raises(ValueError, match='NaN'):
        fit_bayes_mf(data, n_samples=3, burn_in=0, progress=False,
                     init=SimpleNamespace(U=np.full((data.n_users, 2), np.nan), V=np.zeros((data.n_items, 2))))
    with pytest.raises(ValueError, match='dtype'):
        fit_bayes_mf(data, n_samples=3, burn_in=0, progress=False, dtype='float16')


def test_nested_cv_with_map_start_scores_the_map_counterpart_on_the_same_folds():
    from thu_big_data_ml.data import holdout_split, kfold_splits
    from thu_big_data_ml.mf import fit_mf
    d = make_data(n_users=80, n_items=60, density=0.4, seed=4, discrete=True)
    ms = dict(k=4, lams=(0.03, 0.3), max_iter=5)
    tab = nested_cv_bayes(d, [{'k': 2}], n_folds=3, folds=[1], n_samples=12, burn_in=4, progress=False, map_start=ms,
                          dtype='float32')
    assert {'MAP lam', 'MAP test_rmse', 'map_seconds', 'sweep_cpu_ms'} <= set(tab.columns)
    tr_idx, te_idx = kfold_splits(len(d), 3, 0)[1]
    tr, te = d.subset(tr_idx), d.subset(te_idx)
    a, b = holdout_split(len(tr), 0.1, seed=2)
    fit = lambda x, lam: fit_mf(x, k=4, lam=lam, method='als', biased=True, reg='count', max_iter=5, tol=1e-6, progress=False)
    inner = [evaluate(fit(tr.subset(a), lam), tr.subset(b))['rmse'] for lam in ms['lams']]
    lam = ms['lams'][int(np.argmin(inner))]
    assert tab['MAP lam'].iloc[0] == lam
    assert tab['MAP test_rmse'].iloc[0] == pytest.approx(evaluate(fit(tr, lam), te)['rmse'])
    with pytest.raises(ValueError, match='map_start'):
        nested_cv_bayes(d, [{'k': 2}], map_start={'k': 4}, n_samples=3, burn_in=0, progress=False)
    with pytest.raises(TypeError, match='init'):
        nested_cv_bayes(d, [{'k': 2}], init=None, n_samples=3, burn_in=0, progress=False)


def _nested_cv_bayes_loop(data, grid, n_folds=5, inner_frac=0.1, seed=0, folds=None, progress=False, clip=RATING_RANGE,
                          map_start=None, refit_kw=None, **fit_kw):
    "The five nested loops nested_cv_bayes ran before issue 18 (a private reference copy, errors checks left out)."
    import time
    from thu_big_data_ml import bayes
    from thu_big_data_ml.data import holdout_split, kfold_splits
    refit_kw = dict(refit_kw or {})
    splits, rows = kfold_splits(len(data), n_folds, seed), []
    for j in list(range(n_folds) if folds is None else folds):
        tr_idx, te_idx = splits[j]
        tr, te = data.subset(tr_idx), data.subset(te_idx)
        a, b = holdout_split(len(tr), inner_frac, seed=seed + 1 + j)
        itr, iva = tr.subset(a), tr.subset(b)
        start_in, start_tr, map_row = None, None, {}
        if map_start is not None:
            t0 = time.perf_counter()
            mk, lams, mit = map_start.get('k', 50), list(map_start['lams']), map_start.get('max_iter', 15)
            fits = [bayes._map_fit(itr, mk, lam, mit) for lam in lams]
            best = int(np.argmin([evaluate(f, iva, clip)['rmse'] for f in fits]))
            start_in, start_tr = fits[best], bayes._map_fit(tr, mk, lams[best], mit)
            map_row = {'MAP lam': lams[best], 'MAP test_rmse': evaluate(start_tr, te, clip)['rmse'],
                       'map_seconds': time.perf_counter() - t0}
        t0 = time.perf_counter(); inner = []
        for n, g in enumerate(grid):
            m = fit_bayes_mf(itr, seed=seed + j, val=iva, progress=progress, clip=clip, init=start_in, **{**fit_kw, **g})
            inner.append(bayes._fold_rmse(m, iva, clip, f'fold {j}, inner validation of setting {n} {g}'))
        search = time.perf_counter() - t0
        best = grid[int(np.argmin(inner))]
        t0 = time.perf_counter()
        m = fit_bayes_mf(tr, seed=seed + j, val=te, progress=progress, clip=clip, init=start_tr,
                         **{**fit_kw, **refit_kw, **best})
        refit, h = time.perf_counter() - t0, m.history
        rows.append({'fold': j, **best, 'inner_val_rmse': min(inner),
                     'test_rmse': bayes._fold_rmse(m, te, clip, f'fold {j}, test'),
                     **{f'inner {i}': v for i, v in enumerate(inner)}, 'search_seconds': search, 'refit_seconds': refit,
                     'sweep_ms': 1000 * h.seconds.iloc[-1] / len(h),
                     'sweep_cpu_ms': 1000 * h.cpu_seconds.iloc[-1] / len(h), **map_row})
    return pd.DataFrame(rows)


@pytest.mark.parametrize('map_start', [None, dict(k=3, lams=(0.03, 0.3), max_iter=4)])
def test_nested_cv_bayes_on_the_protocol_equals_the_old_loop(map_start):
    "Issue 18: nested_cv_bayes runs on protocol.nested_cv; same columns in the same order, same values (but seconds)."
    d = make_data(n_users=70, n_items=50, density=0.4, seed=7, discrete=True)
    grid = [{'k': 1}, {'k': 3}, {'k': 2, 'implicit': True}]
    kw = dict(n_folds=3, seed=2, folds=[2, 0], map_start=map_start, refit_kw=dict(n_samples=14, burn_in=4),
              n_samples=10, burn_in=3, dtype='float32')
    new = nested_cv_bayes(d, grid, progress=False, **kw)
    old = _nested_cv_bayes_loop(d, grid, **kw)
    assert list(new.columns) == list(old.columns)
    secs = [c for c in old.columns if c.endswith('seconds') or c.startswith('sweep')]
    assert (new[secs] >= 0).all().all()
    pd.testing.assert_frame_equal(new.drop(columns=secs), old.drop(columns=secs), check_exact=True)
