"Tests of thu_big_data_ml.mf: objective and gradients, backend agreement, ALS monotonicity, bad arguments."
import numpy as np
import pandas as pd
import pytest

from thu_big_data_ml.data import Interactions
from thu_big_data_ml.metrics import evaluate
from thu_big_data_ml.mf import fit_mf, MFModel, objective, gradients, init_factors, gd_step_size, DivergenceWarning


def make_data(n_users=40, n_items=30, density=0.3, rank=3, seed=0) -> Interactions:
    r = np.random.default_rng(seed)
    A, B = r.normal(size=(n_users, rank)), r.normal(size=(n_items, rank))
    u, i = np.nonzero(r.random((n_users, n_items)) < density)
    x = np.clip(np.rint(3.5 + 0.6 * (A[u] * B[i]).sum(1) + r.normal(0, .4, len(u))), 1, 5)
    return Interactions(u, i, x, None, n_users, n_items)


@pytest.fixture(scope='module')
def data():
    return make_data()


def dense_objective(U, V, d, lam):
    "The handout's formula with the full mask A."
    X = np.zeros((d.n_users, d.n_items)); A = np.zeros_like(X)
    X[d.user, d.item] = d.rating; A[d.user, d.item] = 1
    U, V = U.astype(np.float64), V.astype(np.float64)
    return 0.5 * np.sum((A * (X - U @ V.T)) ** 2) + lam * np.sum(U ** 2) + lam * np.sum(V ** 2)


def test_objective_matches_dense_handout_formula(data):
    U, V = init_factors(data.n_users, data.n_items, 5, seed=1, scale=0.5)
    assert objective(U, V, data, 0.3) == pytest.approx(dense_objective(U, V, data, 0.3), rel=1e-10)
    # sum, not mean: doubling every rating's weight doubles the data term
    J0 = objective(U, V, data, 0.0)
    assert objective(U, V, data, 0.0, weights=np.full(len(data), 2.0)) == pytest.approx(2 * J0, rel=1e-10)


@pytest.mark.parametrize('biased,weighted', [(False, False), (True, False), (True, True)])
def test_gradients_vs_finite_differences(data, biased, weighted):
    r = np.random.default_rng(2)
    U, V = (a.astype(np.float64) for a in init_factors(data.n_users, data.n_items, 4, seed=3, scale=0.5))
    w = r.uniform(0.5, 2, len(data)) if weighted else None
    P = {'U': U, 'V': V}
    if biased: P.update(bu=r.normal(0, .3, data.n_users), bi=r.normal(0, .3, data.n_items))
    extra = lambda P: dict(mu=3.5, bu=P['bu'], bi=P['bi']) if biased else {}
    g = gradients(P['U'], P['V'], data, 0.2, w, **extra(P))
    assert set(g) == set(P)
    h = 1e-6
    for name in P:
        for flat in r.choice(P[name].size, 8, replace=False):
            idx = np.unravel_index(flat, P[name].shape); old = P[name][idx]
            P[name][idx] = old + h; jp = objective(P['U'], P['V'], data, 0.2, w, **extra(P))
            P[name][idx] = old - h; jm = objective(P['U'], P['V'], data, 0.2, w, **extra(P))
            P[name][idx] = old
            assert (jp - jm) / (2 * h) == pytest.approx(g[name][idx], rel=1e-5, abs=1e-6)


def test_gradients_vs_jax_autodiff(data):
    import jax, jax.numpy as jnp
    U, V = init_factors(data.n_users, data.n_items, 4, seed=3, scale=0.5)
    u, i, x = data.user, data.item, data.rating
    def J(U, V):
        return 0.5 * jnp.sum((x - jnp.sum(U[u] * V[i], 1)) ** 2) + 0.2 * jnp.sum(U ** 2) + 0.2 * jnp.sum(V ** 2)
    gU, gV = jax.grad(J, argnums=(0, 1))(jnp.asarray(U), jnp.asarray(V))
    g = gradients(U, V, data, 0.2)
    np.testing.assert_allclose(np.asarray(gU), g['U'], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(gV), g['V'], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('method,biased', [('gd', False), ('adam', True)])
def test_jax_and_torch_follow_the_same_trajectory(data, method, biased):
    init = init_factors(data.n_users, data.n_items, 6, seed=4)
    kw = dict(k=6, lam=0.1, method=method, biased=biased, init=init, max_iter=12, tol=0, progress=False)
    mj = fit_mf(data, backend='jax', **kw)
    mt = fit_mf(data, backend='torch', **kw)
    mn = fit_mf(data, backend='numba', **kw)
    mr = fit_mf(data, backend='numpy', **kw)
    assert len(mj.history) == len(mt.history) == 13
    assert mj.history.J.iloc[-1] < mj.history.J.iloc[0]
    for m in (mt, mn, mj):
        np.testing.assert_allclose(m.history.J, mr.history.J, rtol=2e-5)
        np.testing.assert_allclose(m.U, mr.U, atol=2e-4)
        np.testing.assert_allclose(m.V, mr.V, atol=2e-4)
        np.testing.assert_allclose(m.bu, mr.bu, atol=2e-4)


@pytest.mark.parametrize('backend', ['jax', 'torch'])
def test_dense_layout_equals_sparse(data, backend):
    init = init_factors(data.n_users, data.n_items, 5, seed=5)
    kw = dict(k=5, lam=0.05, method='gd', backend=backend, init=init, max_iter=5, tol=0, progress=False)
    a, b = fit_mf(data, layout='sparse', **kw), fit_mf(data, layout='dense', **kw)
    np.testing.assert_allclose(a.history.J, b.history.J, rtol=1e-5)
    np.testing.assert_allclose(a.U, b.U, atol=1e-5)


def test_weights_enter_the_loss(data):
    "Zero weight on a rating = dropping it (the IPS-weighted loss of the propensity chapter relies on this)."
    init = init_factors(data.n_users, data.n_items, 4, seed=6)
    w = np.ones(len(data)); w[::3] = 0
    kw = dict(k=4, lam=0.1, init=init, max_iter=6, tol=0, progress=False)
    keep = np.flatnonzero(w > 0)
    for method in ('gd', 'als'):
        a = fit_mf(data, method=method, weights=w, lr=1e-3, **kw) if method == 'gd' else fit_mf(data, method=method, weights=w, **kw)
        b = fit_mf(data.subset(keep), method=method, lr=1e-3, **kw) if method == 'gd' else fit_mf(data.subset(keep), method=method, **kw)
        np.testing.assert_allclose(a.U, b.U, atol=1e-4)


@pytest.mark.parametrize('biased', [False, True])
@pytest.mark.parametrize('lam', [0.01, 1.0])
def test_als_decreases_J_monotonically_and_matches_reference(data, biased, lam):
    kw = dict(k=5, lam=lam, method='als', biased=biased, max_iter=15, tol=0, seed=7, progress=False)
    m = fit_mf(data, backend='numba', **kw)
    J = m.history.J.to_numpy()
    assert np.all(np.diff(J) <= 1e-6 * J[:-1]), J
    assert J[-1] < 0.5 * J[0]
    ref = fit_mf(data, backend='numpy', **{**kw, 'max_iter': 4})
    np.testing.assert_allclose(ref.history.J, J[:5], rtol=1e-4)
    # each half-sweep is an exact block minimiser: the U-gradient vanishes after the U-step ... and after the V-step
    g = gradients(m.U, m.V, data, lam, **(dict(mu=m.mu, bu=m.bu, bi=m.bi) if biased else {}))
    assert np.abs(g['V']).max() < 1e-3


def test_als_converges_and_stops_on_relative_tolerance(data):
    m = fit_mf(data, k=4, lam=1.0, method='als', max_iter=500, tol=1e-6, progress=False)
    assert m.config['converged'] and m.config['iters'] < 500
    J = m.history.J.to_numpy()
    assert abs(J[-1] - J[-2]) < 1e-6 * J[-2]


def test_gd_default_step_is_stable_and_decreases_J(data):
    m = fit_mf(data, k=5, lam=0.01, method='gd', max_iter=100, tol=0, progress=False)
    J = m.history.J.to_numpy()
    assert np.all(np.diff(J) < 0)
    assert m.config['lr'] == pytest.approx(gd_step_size(data, lam=0.01))


def test_model_predict_history_and_validation(data):
    tr, va = data.subset(np.arange(0, len(data), 2)), data.subset(np.arange(1, len(data), 2))
    m = fit_mf(tr, k=3, lam=1.0, method='adam', biased=True, val=va, max_iter=20, progress=False)
    assert isinstance(m, MFModel)
    assert list(m.history.columns) == ['iter', 'J', 'train_rmse', 'val_rmse', 'seconds']
    assert m.history.val_rmse.notna().all() and (np.diff(m.history.seconds) >= 0).all()
    p = m.predict(va.user, va.item)
    assert p.dtype == np.float32 and p.shape == (len(va),)
    assert evaluate(m, va)['rmse'] == pytest.approx(m.history.val_rmse.iloc[-1], rel=1e-9)   # the same clipped RMSE
    expect = m.mu + m.bu[va.user] + m.bi[va.item] + (m.U[va.user] * m.V[va.item]).sum(1)
    su, si = m.user_count[va.user] == 0, m.item_count[va.item] == 0        # unseen in tr: the fallback mu + seen bias
    expect[su | si] = (m.mu + np.where(su, 0, m.bu[va.user]) + np.where(si, 0, m.bi[va.item]))[su | si]
    np.testing.assert_allclose(p, expect, rtol=1e-5, atol=1e-5)
    assert m.info_ == {'pairs': len(va), 'unseen_user': int(su.sum()), 'unseen_item': int(si.sum()),
                       'fallback': int((su | si).sum())}
    assert m.U.dtype == np.float32 and m.U.shape == (data.n_users, 3)
    plain = fit_mf(tr, k=3, method='als', max_iter=2, progress=False)
    assert plain.mu == 0 and not plain.bu.any() and not plain.bi.any()
    with pytest.raises(ValueError, match='user indices'):
        m.predict(np.array([data.n_users]), np.array([0]))


def test_seeds_are_reproducible_and_factors_independent(data):
    a = fit_mf(data, k=4, method='gd', max_iter=3, seed=11, progress=False)
    b = fit_mf(data, k=4, method='gd', max_iter=3, seed=11, progress=False)
    np.testing.assert_array_equal(a.U, b.U)
    U, V = init_factors(50, 50, 4, seed=0)
    assert not np.allclose(U, V)      # U and V come from different streams (the coursework reused one JAX key)


def test_bad_arguments_raise_clear_errors(data):
    with pytest.raises(ValueError, match='k .* must be positive'): fit_mf(data, k=0, progress=False)
    with pytest.raises(ValueError, match='must be positive'): fit_mf(data, k=-3, progress=False)
    with pytest.raises(TypeError, match='k must be an integer'): fit_mf(data, k=2.5, progress=False)
    with pytest.raises(ValueError, match='non-negative'): fit_mf(data, lam=-0.1, progress=False)
    with pytest.raises(ValueError, match='ALS needs lam > 0'): fit_mf(data, lam=0.0, method='als', progress=False)
    with pytest.raises(ValueError, match='reg'): fit_mf(data, reg='l1', progress=False)
    with pytest.raises(ValueError, match='non-negative'): objective(*init_factors(40, 30, 2), data, -1.0)
    with pytest.raises(ValueError, match='method'): fit_mf(data, method='sgd', progress=False)
    with pytest.raises(ValueError, match='backend'): fit_mf(data, backend='tensorflow', progress=False)
    with pytest.raises(ValueError, match='init'): fit_mf(data, k=3, init=init_factors(40, 30, 4), progress=False)
    with pytest.raises(ValueError, match='weights'): fit_mf(data, weights=np.ones(3), progress=False)
    with pytest.raises(ValueError, match='weights'): fit_mf(data, weights=-np.ones(len(data)), progress=False)
    with pytest.raises(ValueError, match='lr'): fit_mf(data, lr=-1.0, progress=False)
    with pytest.raises(TypeError, match='Interactions'): fit_mf(np.zeros((3, 3)), progress=False)
    nan = make_data(); nan.rating[5] = np.nan          # bypass the constructor's own check
    with pytest.raises(ValueError, match='NaN'): fit_mf(nan, progress=False)
    with pytest.raises(ValueError, match='NaN'): objective(*init_factors(40, 30, 2), nan, 0.1)
    with pytest.warns(DivergenceWarning, match='diverged'):
        m = fit_mf(data, k=3, method='gd', lr=10.0, max_iter=50, progress=False)
    assert not m.config['converged'] and m.config['stop_reason'].startswith('diverged')


def test_count_weighted_penalty(data):
    "reg='count': gradients of the count-weighted objective, and all engines agree on it."
    U, V = init_factors(data.n_users, data.n_items, 3, seed=8, scale=0.5)
    g = gradients(U, V, data, 0.3, reg='count')
    h = 1e-6; Uh = U.astype(np.float64).copy(); Uh[2, 1] += h
    jp = objective(Uh, V, data, 0.3, reg='count'); Uh[2, 1] -= 2 * h; jm = objective(Uh, V, data, 0.3, reg='count')
    assert (jp - jm) / (2 * h) == pytest.approx(g['U'][2, 1], rel=1e-5)
    n_u = np.bincount(data.user, minlength=data.n_users)
    assert objective(U, V, data, 1.0, reg='count') - objective(U, V, data, 0.0) == pytest.approx(
        float(n_u @ (U.astype(np.float64) ** 2).sum(1) + np.bincount(data.item, minlength=data.n_items) @ (V.astype(np.float64) ** 2).sum(1)), rel=1e-9)
    init = init_factors(data.n_users, data.n_items, 3, seed=9)
    kw = dict(k=3, lam=0.05, reg='count', biased=True, init=init, max_iter=4, tol=0, progress=False)
    ref = fit_mf(data, method='als', backend='numpy', **kw)
    np.testing.assert_allclose(fit_mf(data, method='als', backend='numba', **kw).history.J, ref.history.J, rtol=1e-4)
    a, b = fit_mf(data, method='adam', backend='torch', **kw), fit_mf(data, method='adam', backend='numba', **kw)
    np.testing.assert_allclose(a.history.J, b.history.J, rtol=1e-5)
    assert ref.config['reg'] == 'count' and ref.objective(data, 0.05) == pytest.approx(ref.history.J.iloc[-1], rel=1e-5)


def test_anderson_extrapolation_solves_a_linear_fixed_point_fast():
    "On an affine contraction g(x) = A x + b, Anderson with window >= dim reaches the fixed point in a few steps."
    from thu_big_data_ml.mf import _Anderson
    r = np.random.default_rng(0)
    Q = np.linalg.qr(r.normal(size=(4, 4)))[0]
    A = Q @ np.diag([0.99, 0.9, 0.5, 0.1]) @ Q.T; b = r.normal(size=4)
    x_star = np.linalg.solve(np.eye(4) - A, b)
    aa, x = _Anderson(5), np.zeros(4)
    for _ in range(8): x = aa.push(x, A @ x + b)
    assert np.linalg.norm(x - x_star) < 1e-8 * np.linalg.norm(x_star)
    y = np.zeros(4)
    for _ in range(8): y = A @ y + b
    assert np.linalg.norm(y - x_star) > 1e-2 * np.linalg.norm(x_star)       # plain iteration is far from it


@pytest.mark.parametrize('biased,weighted', [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize('lam', [0.1, 1.0])
def test_anderson_als_is_monotone_and_not_worse_than_plain(data, biased, weighted, lam):
    w = np.random.default_rng(3).uniform(0.5, 2, len(data)) if weighted else None
    kw = dict(k=5, lam=lam, method='als', biased=biased, weights=w, max_iter=30, tol=0, seed=7, progress=False)
    p, a = fit_mf(data, **kw), fit_mf(data, accel='anderson', **kw)
    J = a.history.J.to_numpy()
    assert np.all(np.diff(J) <= 1e-7 * J[:-1]), J       # accepted iterates only; float32 rounding as plain ALS
    assert a.history.iter.iloc[-1] <= 30 and np.all(np.diff(a.history.iter) > 0)
    assert a.config['iters'] == 30 and a.config['accel'] == 'anderson' and a.config['rejected'] >= 0
    assert J[-1] <= p.history.J.iloc[-1] * (1 + 1e-7)                    # after the same number of sweeps
    # the factors returned are the last accepted ones, and the J computed inside the sweep is the objective's J
    assert a.objective(data, lam, w) == pytest.approx(J[-1], rel=1e-6)
    assert p.objective(data, lam, w) == pytest.approx(p.history.J.iloc[-1], rel=1e-6)
    assert p.config['accel'] is None and 'rejected' not in p.config


def test_anderson_als_numba_matches_numpy_reference(data):
    kw = dict(k=4, lam=0.5, method='als', biased=True, max_iter=8, tol=0, seed=5, progress=False, accel='anderson')
    a, r = fit_mf(data, backend='numba', **kw), fit_mf(data, backend='numpy', **kw)
    assert list(a.history.iter) == list(r.history.iter)
    np.testing.assert_allclose(a.history.J, r.history.J, rtol=1e-4)
    np.testing.assert_allclose(a.U, r.U, atol=1e-3)


def test_anderson_als_stops_on_tolerance_and_never_right_after_a_restart(data):
    m = fit_mf(data, k=4, lam=1.0, method='als', accel='anderson', max_iter=500, tol=1e-6, progress=False)
    assert m.config['converged'] and m.config['iters'] < 500
    J = m.history.J.to_numpy()
    assert abs(J[-1] - J[-2]) < 1e-6 * J[-2]
    plain = fit_mf(data, k=4, lam=1.0, method='als', max_iter=500, tol=1e-6, progress=False)
    assert m.config['iters'] <= plain.config['iters']


def test_accel_bad_arguments(data):
    with pytest.raises(ValueError, match='accel must be one of'): fit_mf(data, method='als', accel='nesterov', progress=False)
    with pytest.raises(ValueError, match="needs method='als'"): fit_mf(data, method='gd', accel='anderson', progress=False)
    with pytest.raises(ValueError, match='accel_window'):
        fit_mf(data, method='als', accel='anderson', accel_window=0, progress=False)
    with pytest.raises(ValueError, match='accel_window'):
        fit_mf(data, method='als', accel='anderson', accel_window=2.5, progress=False)


def test_fit_mf_cached_is_keyed_by_the_code(data, tmp_path, monkeypatch):
    "The same call is fitted once; a changed code digest (an edit of mf or what it imports) means a new entry and a refit."
    import thu_big_data_ml.core as core
    import thu_big_data_ml.mf as mf
    monkeypatch.setenv('THU_BDML_CACHE', str(tmp_path))
    calls, real = [], mf.fit_mf
    monkeypatch.setattr(mf, 'fit_mf', lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    kw = dict(k=3, lam=0.5, method='als', max_iter=3)
    a, b = mf.fit_mf_cached(data, **kw), mf.fit_mf_cached(data, **kw)
    assert len(calls) == 1 and isinstance(b, MFModel)
    np.testing.assert_array_equal(a.U, b.U)
    assert b.config['stop_reason'] == 'max_iter' and b.user_count is not None
    entry = core.cached(mf._fit_kw, deps=['mf']).entry(data, kw)
    assert entry.is_relative_to(tmp_path) and (entry / 'result.pkl').exists()
    assert set(core.cached(mf._fit_kw, deps=['mf']).info(data, kw)['code']) == {'mf'}
    monkeypatch.setattr(core, 'code_digest', lambda *m: 'edited')
    assert core.cached(mf._fit_kw, deps=['mf']).entry(data, kw) != entry
    c = mf.fit_mf_cached(data, **kw)
    assert len(calls) == 2
    np.testing.assert_array_equal(a.U, c.U)
    mf.fit_mf_cached(data, **kw)
    assert len(calls) == 2


def test_choose_biased_mf_converges_and_picks_on_validation():
    from thu_big_data_ml.mf import choose_biased_mf
    d = make_data(n_users=60, n_items=40, density=0.4)
    final, tab = choose_biased_mf(d, k=3, candidates=((10.0, 'uniform'), (1.0, 'uniform'), (0.1, 'count')), max_iter=200)
    assert list(tab.columns) == ['lam', 'reg', 'val RMSE', 'sweeps', 'converged'] and tab.converged.all()
    best = tab.loc[tab['val RMSE'].idxmin()]
    assert (final.config['lam'], final.config['reg']) == (best.lam, best.reg)
    assert final.config['converged'] and final.config['accel'] == 'anderson' and final.config['biased']


def test_nested_cv_movielens_one_fold():
    pytest.importorskip('recbole')
    from thu_big_data_ml.mf import nested_cv_movielens
    cv = nested_cv_movielens('100k', [(4, 10.0, 'uniform'), (4, 0.05, 'count')], max_folds=1, sweeps=3)
    assert len(cv) == 1 and {'k', 'lam', 'reg', 'val RMSE', 'test RMSE'} <= set(cv.columns)
    assert 0.85 < cv['test RMSE'].iloc[0] < 1.1


def _nested_cv_movielens_old_loop(variant, grid, max_folds=5, sweeps=15, tol=1e-5):
    "The loop `mf.nested_cv_movielens` ran before it moved onto `protocol.nested_cv` (session 6), as the reference."
    from thu_big_data_ml.data import holdout_split, kfold_splits, load_movielens
    fit = lambda tr, **kw: fit_mf(tr, progress=False, **kw)
    ml = load_movielens(variant)
    rows = []
    for f, (tr, te) in enumerate(kfold_splits(len(ml.train), k=5, seed=0)[:max_folds]):
        tr_set, te_set = ml.train.subset(tr), ml.train.subset(te)
        itr, iva = holdout_split(len(tr_set), 0.1, seed=f)
        inner_, valid_ = tr_set.subset(itr), tr_set.subset(iva)
        scores = {(k, lam, reg): evaluate(fit(inner_, k=k, lam=lam, reg=reg, method='als', biased=True,
                                              max_iter=sweeps, tol=tol), valid_)['rmse'] for k, lam, reg in grid}
        k, lam, reg = min(scores, key=scores.get)
        m = fit(tr_set, k=k, lam=lam, reg=reg, method='als', biased=True, max_iter=sweeps, tol=tol)
        rows.append({'data': variant, 'fold': f, 'k': k, 'lam': lam, 'reg': reg, 'val RMSE': scores[(k, lam, reg)],
                     'test RMSE': evaluate(m, te_set)['rmse'], 'fit seconds': m.history.seconds.iloc[-1]})
    return pd.DataFrame(rows)


def test_nested_cv_movielens_on_the_protocol_equals_the_old_loop():
    "Same folds, same inner splits (seed = fold), same choice and scores: rows equal but the timing column."
    pytest.importorskip('recbole')
    from thu_big_data_ml.mf import nested_cv_movielens
    grid = [(4, 10.0, 'uniform'), (4, 0.05, 'count'), (3, 1.0, 'uniform')]
    new = nested_cv_movielens('100k', grid, max_folds=2, sweeps=3)
    ref = _nested_cv_movielens_old_loop('100k', grid, max_folds=2, sweeps=3)
    assert list(new.columns) == list(ref.columns)
    pd.testing.assert_frame_equal(new.drop(columns='fit seconds').reset_index(drop=True),
                                  ref.drop(columns='fit seconds'), check_exact=True)
    assert (new['fit seconds'] > 0).all()


def test_als_gram_blas_pointers_agree_with_numba_matmul():
    "NumPy's and SciPy's ssyrk behind `_als_rows` give the lower triangle of numba's `Z.T @ Z` to rounding, nothing else."
    from numba import njit
    from thu_big_data_ml.mf import _gram, _ssyrk, _ssyrk_scipy, one_blas_thread
    at = njit(lambda Z: Z.T @ Z)
    r = np.random.default_rng(0)
    with one_blas_thread():
        for m, k in ((690, 50), (37, 21), (5, 11), (1, 3), (300, 101)):
            Z = r.normal(size=(m + 3, k)).astype(np.float32)          # only the first m rows enter
            ref, low, up = at(np.ascontiguousarray(Z[:m])), np.tril_indices(k), np.triu_indices(k, 1)
            for fn, ints in (_ssyrk(), _ssyrk_scipy()):
                G = np.full((k, k), np.nan, np.float32)
                _gram(fn, Z, m, G, ints.copy(), np.array([1.0, 0.0], np.float32), np.array([85, 78], np.uint8))
                np.testing.assert_allclose(G[low], ref[low], rtol=1e-5, atol=1e-4 * np.sqrt(m))
                assert np.isnan(G[up]).all()


def test_fit_mf_cached_copy_in_main_hits_the_modules_cache(data, tmp_path, monkeypatch):
    "A notebook kernel's copy of fit_mf_cached (defined in __main__) caches under the module's name: one fit, no miss."
    import inspect
    import thu_big_data_ml.mf as mf
    monkeypatch.setenv('THU_BDML_CACHE', str(tmp_path))
    ns = {'__name__': '__main__', 'Any': object, 'MFModel': MFModel}
    exec(inspect.getsource(mf.fit_mf_cached), ns)                          # what the chapter's kernel defines
    calls, real = [], mf.fit_mf
    monkeypatch.setattr(mf, 'fit_mf', lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    kw = dict(k=3, lam=0.5, method='als', max_iter=2)
    a = ns['fit_mf_cached'](data, **kw)
    b = mf.fit_mf_cached(data, **kw)
    assert len(calls) == 1
    np.testing.assert_array_equal(a.U, b.U)
    assert [p.name for p in (tmp_path / 'calls').iterdir()] == ['thu_big_data_ml.mf._fit_kw']


@pytest.mark.parametrize('d,dtype', [(1, np.float64), (7, np.float32), (21, np.float64)])
def test_chol_solve_matches_numpy_solve(d, dtype):
    "The shared Cholesky helper (also chapter 04's block solver) against np.linalg.solve, and non-SPD reported."
    from thu_big_data_ml.mf import _chol_solve
    r = np.random.default_rng(d)
    M = r.normal(size=(d, d)); A = (M @ M.T).astype(dtype)
    b, x, L = r.normal(size=d), np.full(d, np.nan), np.empty((d, d))
    assert _chol_solve(A, 0.3, b, x, L)
    np.testing.assert_allclose(x, np.linalg.solve(A.astype(np.float64) + 0.3 * np.eye(d), b), rtol=1e-4 if dtype == np.float32 else 1e-9)
    assert not _chol_solve(-A, 0.0, b, x, L)
    assert not _chol_solve(np.full((d, d), np.nan), 1.0, b, x, L)   # NaN is not positive: reported, not propagated


@pytest.mark.parametrize('seed', [0, 1])
def test_structure_matches_reference(seed):
    "The counting-sort CSR/CSC structure equals the lexsort/argsort reference, repeats and empty rows included."
    from thu_big_data_ml.mf import _as_obs, _structure, _structure_ref
    r = np.random.default_rng(seed)
    n = 2000
    u, i = r.integers(0, 50, n), r.integers(3, 40, n)
    srt = np.lexsort((i, u))
    for o in (_as_obs((u, i, r.random(n), 60, 45)), _as_obs((u[srt], i[srt], r.random(n), 60, 45))):   # also in CSR order
        s, t = _structure(o), _structure_ref(o)
        assert set(s) == set(t)
        for kk in t: np.testing.assert_array_equal(s[kk], t[kk], err_msg=kk)
        c = _structure(o, csc=False)                  # the fused GD pass needs the CSR view only
        assert set(c) == {'indptr_u', 'item_u', 'x_u', 'w_u'}
        for kk in c: np.testing.assert_array_equal(c[kk], t[kk], err_msg=kk)


def _engines(seed: int, n_users: int = 300, n_items: int = 120, k: int = 7):
    "A weighted, biased problem with empty rows and columns, and its numba engine with its parameters."
    from thu_big_data_ml.mf import _as_obs, _init_params
    r = np.random.default_rng(seed)
    n = 5000
    d = Interactions(r.integers(0, n_users - 5, n), r.integers(0, n_items - 3, n), r.integers(1, 6, n), None, n_users, n_items)
    o = _as_obs(d, weights=r.uniform(0.5, 2, n).astype(np.float32))
    P = _init_params(o, k, seed, None, 0.3, True)
    P['bu'] += r.normal(0, .1, n_users).astype(np.float32); P['bi'] += r.normal(0, .1, n_items).astype(np.float32)
    return o, P


@pytest.mark.parametrize('seed,reg,biased', [(0, 'count', True), (1, 'uniform', False)])
def test_fused_gradient_equals_two_passes_and_reference(seed, reg, biased):
    "The fused one-pass GD kernel gives the two-pass kernels' J and gradients, and the float64 NumPy reference's."
    from thu_big_data_ml.mf import _NumbaEngine, _NumpyEngine, _structure
    o, P = _engines(seed)
    mu = 3.2 if biased else 0.0
    if not biased: P = {'U': P['U'], 'V': P['V']}         # as fit_mf makes them: no biases, mu = 0
    fused = _NumbaEngine(o, P, 0.07, mu, biased, reg=reg)
    assert fused.bounds is not None and 'pos' not in fused.S
    two = _NumbaEngine(o, P, 0.07, mu, biased, reg=reg, als=True)    # no fused chunks: the two-pass kernels
    assert two.bounds is None
    ref = _NumpyEngine(o, P, 0.07, mu, biased, reg=reg)
    (Jf, sf), (Jt, st), (Jr, sr) = fused.value_grad(), two.value_grad(), ref.value_grad()
    assert Jf == pytest.approx(Jt, rel=1e-6) and Jf == pytest.approx(Jr, rel=1e-6) and sf == pytest.approx(sr, rel=1e-6)
    for kk in ref.G:
        scale = np.abs(ref.G[kk]).max()
        np.testing.assert_allclose(fused.G[kk], two.G[kk], atol=1e-5 * scale, err_msg=kk)
        np.testing.assert_allclose(fused.G[kk], ref.G[kk], atol=1e-5 * scale, err_msg=kk)


def test_fused_gradient_does_not_depend_on_thread_count():
    "A fixed number of chunks: the same bits with one thread and with two (the fit is the same on any machine)."
    import numba
    from thu_big_data_ml.mf import _NumbaEngine
    o, P = _engines(2)
    was, out = numba.get_num_threads(), []
    try:
        for t in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(t)
            e = _NumbaEngine(o, P, 0.05, 3.0, True)
            out.append((e.value_grad(), {kk: v.copy() for kk, v in e.G.items()}))
    finally: numba.set_num_threads(was)
    assert out[0][0] == out[1][0]
    for kk in out[0][1]: np.testing.assert_array_equal(out[0][1][kk], out[1][1][kk], err_msg=kk)


def test_gd_fit_same_with_fused_and_two_pass_kernels(monkeypatch):
    "fit_mf's GD path: the fused kernel and the two-pass fallback (buffers over budget) reach the same fit."
    import thu_big_data_ml.mf as M
    d = make_data(seed=3)
    kw = dict(k=4, lam=0.05, method='gd', biased=True, max_iter=30, tol=0.0, progress=False)
    a = fit_mf(d, **kw)
    monkeypatch.setattr(M, '_FUSED_BYTES', 0)
    b = fit_mf(d, **kw)
    np.testing.assert_allclose(a.history['J'], b.history['J'], rtol=1e-5)
    np.testing.assert_allclose(a.U, b.U, atol=1e-4)
