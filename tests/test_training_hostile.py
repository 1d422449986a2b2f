"Hostile cases for the MF fits of chapters 03 and 04: divergence, bad inputs and hyperparameters, bad queries, unseen rows."
import pickle
import warnings

import numpy as np
import pytest

from thu_big_data_ml.data import Interactions
from thu_big_data_ml.metrics import evaluate
from thu_big_data_ml import mf as MF
from thu_big_data_ml.mf import fit_mf, MFModel, DivergenceWarning, divergence_reason
from thu_big_data_ml import regularization as RG
from thu_big_data_ml.regularization import fit_regularized, fit_regularized_als, RegMF


def make_data(n_users=40, n_items=30, density=0.3, rank=3, seed=0, drop=()) -> Interactions:
    "Low-rank ratings in 1..5; users and items listed in `drop` keep their index but get no rating (unseen)."
    r = np.random.default_rng(seed)
    A, B = r.normal(size=(n_users, rank)), r.normal(size=(n_items, rank))
    u, i = np.nonzero(r.random((n_users, n_items)) < density)
    x = np.clip(np.rint(3.5 + 0.6 * (A[u] * B[i]).sum(1) + r.normal(0, .4, len(u))), 1, 5).astype(np.float32)
    keep = np.ones(len(u), bool)
    for kind, idx in drop: keep &= (u if kind == 'user' else i) != idx
    return Interactions(u[keep], i[keep], x[keep], None, n_users, n_items)


@pytest.fixture(scope='module')
def data():
    return make_data()


def with_rating(d: Interactions, rating) -> Interactions:
    "A copy with other ratings, bypassing the constructor's own checks (the fits must check on their own)."
    out = Interactions(d.user, d.item, d.rating.copy(), None, d.n_users, d.n_items)
    out.rating = rating
    return out


FITS = {   # name -> fit(train, **kw) on small settings
    'mf-gd': lambda d, **kw: fit_mf(d, **{'k': 3, 'method': 'gd', 'max_iter': 5, 'progress': False, **kw}),
    'mf-als': lambda d, **kw: fit_mf(d, **{'k': 3, 'method': 'als', 'max_iter': 3, 'progress': False, **kw}),
    'reg-gradient': lambda d, **kw: fit_regularized(d, **{'k': 3, 'steps': 5, 'eval_every': 5, 'progress': False, **kw}),
    'reg-als': lambda d, **kw: fit_regularized_als(d, **{'k': 3, 'iters': 3, 'progress': False, **kw}),
}


# ---- divergence is detected and flagged, never converged=True -------------------------------------------------------

@pytest.mark.parametrize('backend', ['numpy', 'numba', 'jax', 'torch'])
@pytest.mark.parametrize('method,lr', [('gd', 10.0), ('adam', 50.0)])
def test_too_large_learning_rate_is_flagged_as_divergence(data, method, lr, backend):
    with pytest.warns(DivergenceWarning, match='diverged'):
        m = fit_mf(data, k=3, method=method, backend=backend, lr=lr, max_iter=60, tol=1e-9, progress=False)
    assert m.config['converged'] is False and m.config['stop_reason'].startswith('diverged: ')
    h = m.history
    assert np.isfinite(h.J).all() and len(h) >= 1
    # the factors returned are those of the best recorded iterate
    assert m.config['best_iter'] == int(h.iter[h.J.idxmin()])
    assert np.isfinite(m.U).all() and np.isfinite(m.V).all()
    assert m.objective(data, m.config['lam']) == pytest.approx(h.J.min(), rel=1e-4)
    assert np.isfinite(m.predict(data.user, data.item)).all()


@pytest.mark.parametrize('backend', ['numba', 'torch'])
def test_divergence_biased_and_weighted(data, backend):
    w = np.random.default_rng(1).uniform(0.5, 2.0, len(data))
    with pytest.warns(DivergenceWarning):
        m = fit_mf(data, k=3, method='gd', backend=backend, biased=True, weights=w, lr=5.0, max_iter=40, progress=False)
    assert not m.config['converged'] and m.config['stop_reason'].startswith('diverged')
    assert np.isfinite(m.bu).all() and np.isfinite(m.bi).all()


def _nan_after(method_name, n_ok):
    "An engine method that returns its real (J, sse) `n_ok` times, then J = NaN."
    real = getattr(MF._NumbaEngine, method_name)
    calls = {'n': 0}
    def fake(self, *a):
        calls['n'] += 1
        J, sse = real(self, *a)
        return (float('nan'), sse) if calls['n'] > n_ok else (J, sse)
    return fake


@pytest.mark.parametrize('accel', [None, 'anderson'])
def test_non_finite_J_stops_als_with_best_factors(data, monkeypatch, accel):
    monkeypatch.setattr(MF._NumbaEngine, 'als_sweep', _nan_after('als_sweep', 3))
    with pytest.warns(DivergenceWarning, match='J not finite'):
        m = fit_mf(data, k=3, lam=0.5, method='als', accel=accel, max_iter=20, tol=0, progress=False)
    # plain ALS stops at sweep 4; accelerated ALS first rejects the NaN of an extrapolated sweep (4), then its plain
    # retry (5) is NaN too and stops it
    last = 4 if accel is None else 5
    assert not m.config['converged'] and m.config['stop_reason'] == f'diverged: J not finite at iteration {last}'
    assert m.history.iter.iloc[-1] < last and np.isfinite(m.U).all()
    assert m.objective(data, 0.5) == pytest.approx(m.history.J.iloc[-1], rel=1e-5)


def test_slow_blow_up_is_caught_by_the_ten_fold_rule():
    assert divergence_reason(9.9, 1.0, 5) is None
    assert divergence_reason(10.1, 1.0, 5) == 'diverged: J = 10.1 > 10 x best 1 at iteration 5'
    assert divergence_reason(float('inf'), 1.0, 2) == 'diverged: J not finite at iteration 2'
    assert divergence_reason(1e30, float('inf'), 0) is None          # the first value has no best to compare with


@pytest.mark.parametrize('batch_size', [None, 64])
def test_regularized_gradient_loop_divergence(data, batch_size):
    with pytest.warns(DivergenceWarning):
        m = fit_regularized(data, k=3, optimizer='sgd', lr=1e4, steps=50, eval_every=5, batch_size=batch_size,
                            progress=False)
    assert not m.config['converged'] and m.config['stop_reason'].startswith('diverged')
    assert np.isfinite(m.U).all() and np.isfinite(m.predict(data.user, data.item)).all()
    assert m.config['best_step'] == 0


def test_regularized_als_divergence(data, monkeypatch):
    real, calls = RG._solve_block, {'n': 0}
    def fake(*a, **kw):
        calls['n'] += 1
        b, x = real(*a, **kw)
        return (b, x * np.nan) if calls['n'] > 4 else (b, x)      # sweep 3 goes wrong
    monkeypatch.setattr(RG, '_solve_block', fake)
    with pytest.warns(DivergenceWarning):
        m = fit_regularized_als(data, k=3, iters=10, tol=1e-12, progress=False)
    assert m.config['stop_reason'] == 'diverged: J not finite at iteration 3' and not m.config['converged']
    assert list(m.history.step) == [1, 2] and np.isfinite(m.U).all()


def test_normal_runs_record_their_stop_reason(data):
    a = fit_mf(data, k=3, lam=1.0, method='als', max_iter=500, tol=1e-6, progress=False)
    b = fit_mf(data, k=3, method='gd', max_iter=3, progress=False)
    c = fit_regularized_als(data, k=3, iters=200, tol=1e-7, progress=False)
    d = fit_regularized(data, k=3, steps=3, eval_every=1, progress=False)
    assert (a.config['stop_reason'], a.config['converged']) == ('converged', True)
    assert (b.config['stop_reason'], b.config['converged']) == ('max_iter', False)
    assert (c.config['stop_reason'], c.config['converged']) == ('converged', True)
    assert (d.config['stop_reason'], d.config['converged']) == ('max_iter', False)


# ---- bad inputs are rejected before training ------------------------------------------------------------------------

@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize('fit', list(FITS))
def test_non_finite_ratings_are_rejected(data, fit, bad):
    r = data.rating.copy(); r[7] = bad
    with pytest.raises(ValueError, match='NaN/inf'):
        FITS[fit](with_rating(data, r))


@pytest.mark.parametrize('fit', list(FITS))
def test_non_finite_validation_ratings_are_rejected(data, fit):
    r = data.rating.copy(); r[3] = np.nan
    with pytest.raises(ValueError, match='NaN/inf'):
        FITS[fit](data, val=with_rating(data, r))


@pytest.mark.parametrize('bad', [np.nan, np.inf, -1.0])
@pytest.mark.parametrize('fit', list(FITS))
def test_bad_weights_are_rejected(data, fit, bad):
    w = np.ones(len(data)); w[2] = bad
    with pytest.raises(ValueError, match='weights must be finite'):
        FITS[fit](data, weights=w)


def test_float_indices_in_training_data_are_rejected(data):
    d = Interactions(data.user, data.item, data.rating, None, data.n_users, data.n_items)
    d.user = data.user.astype(np.float64)
    for fit in FITS.values():
        with pytest.raises(TypeError, match='integers'): fit(d)


MF_BAD = [({'lam': np.nan}, 'lam'), ({'lam': np.inf}, 'lam'), ({'lam': -1.0}, 'lam'), ({'lr': np.nan}, 'lr'),
          ({'lr': np.inf}, 'lr'), ({'lr': -0.1}, 'lr'), ({'lr': 0.0}, 'lr'), ({'k': 2.5}, 'k'), ({'k': 0}, 'k'),
          ({'k': True}, 'k'), ({'max_iter': 0}, 'max_iter'), ({'max_iter': 2.5}, 'max_iter'), ({'tol': np.nan}, 'tol'),
          ({'tol': -1.0}, 'tol'), ({'abs_tol': np.nan}, 'abs_tol'), ({'init_scale': np.inf}, 'init_scale'),
          ({'min_iter': -1}, 'min_iter')]


@pytest.mark.parametrize('kw,name', MF_BAD, ids=[f'{n}={list(kw.values())[0]}' for kw, n in MF_BAD])
def test_bad_mf_hyperparameters_are_rejected_before_work(data, monkeypatch, kw, name):
    monkeypatch.setattr(MF, 'init_factors', lambda *a, **k: pytest.fail('work started before the arguments were checked'))
    with pytest.raises((ValueError, TypeError), match=name):
        fit_mf(data, **{'k': 3, 'progress': False, **kw})


REG_BAD = [('reg-gradient', {'l2': np.nan}, 'l2'), ('reg-gradient', {'lr': np.inf}, 'lr'), ('reg-gradient', {'lr': -1.0}, 'lr'),
           ('reg-gradient', {'steps': 0}, 'steps'), ('reg-gradient', {'k': 0}, 'k'), ('reg-gradient', {'gram': -1.0}, 'gram'),
           ('reg-gradient', {'eval_every': 0}, 'eval_every'), ('reg-als', {'iters': 0}, 'iters'),
           ('reg-als', {'tol': np.nan}, 'tol'), ('reg-als', {'l2': np.inf}, 'l2'), ('reg-als', {'k': 1.5}, 'k')]


@pytest.mark.parametrize('fit,kw,name', REG_BAD, ids=[f'{f}:{n}' for f, kw, n in REG_BAD])
def test_bad_regularized_hyperparameters_are_rejected(data, fit, kw, name):
    with pytest.raises((ValueError, TypeError), match=name):
        FITS[fit](data, **kw)


# ---- hostile queries ---------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def models(data):
    return {'MFModel': fit_mf(data, k=3, method='als', biased=True, max_iter=3, progress=False),
            'RegMF': fit_regularized_als(data, k=3, iters=3, progress=False)}


BAD_QUERIES = [
    (np.array([40]), np.array([0]), ValueError, 'user indices'),       # n_users = 40
    (np.array([0]), np.array([30]), ValueError, 'item indices'),
    (np.array([-1]), np.array([0]), ValueError, 'user indices'),
    (np.array([0.0]), np.array([0]), TypeError, 'integers'),
    (np.array([np.nan]), np.array([0]), TypeError, 'integers'),
    (np.array([True]), np.array([0]), TypeError, 'integers'),
    (np.array([0, 1]), np.array([0]), ValueError, 'one length'),
]


@pytest.mark.parametrize('u,i,exc,msg', BAD_QUERIES, ids=['user>=n', 'item>=n', 'negative', 'float', 'nan', 'bool', 'lengths'])
@pytest.mark.parametrize('name', ['MFModel', 'RegMF'])
def test_bad_queries_are_rejected(models, name, u, i, exc, msg):
    with pytest.raises(exc, match=msg):
        models[name].predict(u, i)


@pytest.mark.parametrize('name', ['MFModel', 'RegMF'])
def test_empty_query_gives_an_empty_array(models, name):
    m = models[name]
    for u, i in (([], []), (np.array([], np.int32), np.array([], np.int64))):
        p = m.predict(u, i)
        assert p.shape == (0,) and p.dtype.kind == 'f'
    assert m.info_['pairs'] == 0 and m.info_['fallback'] == 0


UNSEEN_FITS = {
    'mf-gd-biased': lambda d: fit_mf(d, k=3, method='gd', biased=True, max_iter=20, progress=False),
    'mf-als-plain': lambda d: fit_mf(d, k=3, method='als', max_iter=5, progress=False),
    'mf-adam-torch': lambda d: fit_mf(d, k=3, method='adam', backend='torch', biased=True, max_iter=5, progress=False),
    'reg-als-biased': lambda d: fit_regularized_als(d, k=3, iters=3, progress=False),
    'reg-als-plain': lambda d: fit_regularized_als(d, k=3, iters=3, biased=False, progress=False),
    'reg-gradient': lambda d: fit_regularized(d, k=3, steps=5, eval_every=5, progress=False),
}


@pytest.mark.parametrize('fit', list(UNSEEN_FITS))
def test_unseen_users_and_items_get_a_finite_counted_fallback(fit):
    d = make_data(drop=[('user', 0), ('item', 0)])          # user 0 and item 0 are in the index space, never rated
    m = UNSEEN_FITS[fit](d)
    u, i = np.array([0, 0, 5, 5]), np.array([0, 4, 0, 4])
    p = m.predict(u, i)
    assert np.isfinite(p).all()
    assert m.info_ == {'pairs': 4, 'unseen_user': 2, 'unseen_item': 2, 'fallback': 3}
    biased = m.config['biased']
    if biased:   # mu + the seen side's bias
        assert p[0] == pytest.approx(m.mu, abs=1e-6)
        assert p[1] == pytest.approx(m.mu + m.bi[4], abs=1e-5) and p[2] == pytest.approx(m.mu + m.bu[5], abs=1e-5)
    else:        # the training mean
        assert p[:3] == pytest.approx([d.rating.mean()] * 3, abs=1e-5)
    r = evaluate(m, (u, i, np.array([3.0, 4.0, 2.0, 5.0]), d.n_users, d.n_items))
    assert r['fallback'] == 3 and np.isfinite(r['rmse'])


# ---- dtypes and pickling ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('fit', ['mf-gd', 'mf-als', 'reg-als', 'reg-gradient'])
def test_float32_and_float64_ratings_agree(data, fit):
    d32 = Interactions(data.user, data.item, data.rating.astype(np.float32), None, data.n_users, data.n_items)
    d64 = with_rating(d32, data.rating.astype(np.float64))
    a, b = FITS[fit](d32), FITS[fit](d64)
    np.testing.assert_allclose(a.predict(data.user, data.item), b.predict(data.user, data.item), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('name', ['MFModel', 'RegMF'])
def test_pickle_round_trip(models, data, name):
    m = models[name]
    m2 = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(m.predict(data.user, data.item), m2.predict(data.user, data.item))
    assert m2.config == m.config and m2.info_ == m.info_


@pytest.mark.parametrize('name', ['MFModel', 'RegMF'])
def test_predictions_are_unclipped_and_evaluate_clips(models, data, name):
    m = models[name]
    far = Interactions(data.user, data.item, np.full(len(data), 5.0, np.float32), None, data.n_users, data.n_items)
    p = m.predict(data.user, data.item)
    assert not hasattr(m, 'rmse')
    assert evaluate(m, far, clip=None)['rmse'] == pytest.approx(float(np.sqrt(np.mean((p.astype(np.float64) - 5) ** 2))))
    assert evaluate(m, far)['rmse'] <= evaluate(m, far, clip=None)['rmse']
