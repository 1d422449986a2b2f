"Tests of thu_big_data_ml.fm: compiled sampler = NumPy twin = flat design, chapter 10 reproduced, feature specs, protocol."
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from thu_big_data_ml.data import Interactions
from thu_big_data_ml.fm import (Block, BayesFM, FEATURE_SETS, RatingFeatures, check_blocks, feature_terms, fit_bayes_fm,
                                nested_cv_fm, predictive_interval, sample_fm)
from thu_big_data_ml.metrics import Predictor, evaluate, score


def make_data(n_users=50, n_items=40, density=0.35, rank=2, noise=0.3, n_cold=2, seed=0) -> Interactions:
    "Low-rank ratings with days; the last `n_cold` users and items have no rating."
    r = np.random.default_rng(seed)
    A, B = r.normal(size=(n_users, rank)), r.normal(size=(n_items, rank))
    mask = r.random((n_users, n_items)) < density
    mask[n_users - n_cold:], mask[:, n_items - n_cold:] = False, False
    u, i = np.nonzero(mask)
    x = 3.0 + 0.5 * (A[u] * B[i]).sum(1) + r.normal(0, noise, len(u))
    day = 12_000 + r.integers(0, 60, len(u))
    return Interactions(u, i, x, day, n_users, n_items)


@pytest.fixture(scope='module')
def data():
    return make_data()


@pytest.fixture(scope='module')
def model(data):
    return fit_bayes_fm(data, 'flipped', k=3, n_samples=30, burn_in=10, seed=0, progress=False)


FULL = 'flipped+user_bin+item_bin'


def test_numba_chain_equals_numpy_twin(data):
    kw = dict(k=3, n_samples=6, burn_in=2, seed=5, val=data, n_bins=4, progress=False)
    a = fit_bayes_fm(data, FULL, backend='numba', **kw)
    b = fit_bayes_fm(data, FULL, backend='numpy', **kw)
    np.testing.assert_allclose(a.history.train_rmse, b.history.train_rmse, rtol=1e-9)
    np.testing.assert_allclose(a.posterior.state['V'], b.posterior.state['V'], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(a.val_prediction, b.val_prediction, rtol=1e-8)
    assert a.config['linear_only'] == ['user_bin', 'item_bin']


def _flat(blocks):
    return [Block(sp.hstack([b.X[b.index] for b in blocks]).tocsr(), None, tuple(t for b in blocks for t in b.terms))]


def test_relation_blocks_equal_flat_design_and_residuals_stay_exact(data):
    f = RatingFeatures(FULL, n_bins=4).fit(data)
    blocks = f.blocks(data.user, data.item, data.day)
    kw = dict(k=3, n_samples=8, burn_in=2, seed=2, linear_only=f.linear_only)
    a = sample_fm(data.rating, blocks, **kw)
    b = sample_fm(data.rating, _flat(blocks), **kw)
    np.testing.assert_allclose(a.history.train_rmse, b.history.train_rmse, rtol=1e-9)
    np.testing.assert_allclose(a.state['w'], b.state['w'], rtol=1e-7, atol=1e-9)
    X = _flat(blocks)[0].X.toarray(); s = a.state
    pred = s['w0'] + X @ s['w'] + 0.5 * (((X @ s['V']) ** 2).sum(1) - ((X ** 2) @ (s['V'] ** 2)).sum(1))
    assert abs(np.sqrt(np.mean((data.rating - pred) ** 2)) - a.history.train_rmse.iloc[-1]) < 1e-10
    # linear-only terms carry no factors; columns no rating touches stay exactly 0
    lo = np.concatenate([np.full(w, n in f.linear_only) for n, w in a.terms])
    assert (s['V'][lo] == 0).all() and np.abs(s['V'][~lo]).sum() > 0
    user_cols = slice(0, data.n_users)
    assert (s['w'][user_cols][-2:] == 0).all() and (s['V'][user_cols][-2:] == 0).all()


def test_predict_equals_mean_of_kept_samples_and_dense_formula(data, model):
    p = model.predict(data.user[:7], data.item[:7], data.day[:7])
    blocks = model.features.blocks(data.user[:7], data.item[:7], data.day[:7])
    X = _flat(blocks)[0].X.toarray(); post = model.posterior
    manual = np.mean([post.w0[s] + X @ post.w[s] + 0.5 * (((X @ post.V[s]) ** 2).sum(1) - ((X ** 2) @ (post.V[s] ** 2)).sum(1))
                      for s in range(post.n_kept)], axis=0)
    np.testing.assert_allclose(p, manual, rtol=1e-5)


def test_reproduces_chapter_10_bayesian_mf_within_monte_carlo_error():
    from thu_big_data_ml.bayes import fit_bayes_mf
    d = make_data(n_users=60, n_items=45, n_cold=0, seed=1)
    d = Interactions(d.user, d.item, d.rating, None, d.n_users, d.n_items)
    uu, ii = np.divmod(np.arange(60 * 45), 45)
    kw = dict(k=3, n_samples=700, burn_in=100, keep=300, progress=False)
    mf = [fit_bayes_mf(d, seed=s, clip=None, **kw).predict(uu, ii) for s in (1, 2)]
    fm = fit_bayes_fm(d, 'mf', seed=3, **kw).predict(uu, ii)
    rms = lambda x: float(np.sqrt(np.mean(x ** 2)))
    mc = rms(mf[0] - mf[1])
    assert rms(mf[0] - fm) < 1.6 * mc and rms(mf[1] - fm) < 1.6 * mc
    assert rms(fm - mf[0]) < 0.05


def test_same_seed_same_chain_other_seed_differs(data):
    kw = dict(k=2, n_samples=5, burn_in=1, progress=False)
    a, b, c = (fit_bayes_fm(data, 'svd++', seed=s, **kw) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.predict(data.user, data.item), b.predict(data.user, data.item))
    assert np.abs(a.predict(data.user, data.item) - c.predict(data.user, data.item)).max() > 1e-4


def test_fits_well_and_history(data):
    rng = np.random.default_rng(0)
    test = rng.random(len(data)) < 0.2
    tr, te = data.subset(np.flatnonzero(~test)), data.subset(np.flatnonzero(test))
    m = fit_bayes_fm(tr, 'svd++', k=3, n_samples=120, burn_in=40, val=te, keep=20, progress=False)
    h = m.history
    assert len(h) == 120 and m.posterior.n_kept <= 20 and h.val_rmse.iloc[:40].isna().all()
    assert (np.diff(h.seconds) >= 0).all()
    assert score(m.val_prediction, te.rating)['rmse'] < 0.5            # noise 0.3, rating sd about 0.8
    assert 0.2 < h.noise_sd.iloc[-40:].mean() < 0.4
    assert abs(evaluate(m, te)['rmse'] - h.val_rmse.iloc[-1]) < 0.02   # kept samples vs all samples


def test_implicit_features_and_days_come_from_training_only(data):
    tr = data.subset(np.arange(0, len(data), 2))
    f = RatingFeatures('flipped').fit(tr)
    u = int(tr.user[0])
    row = f.X_user[u].toarray().ravel()[data.n_users:]
    rated = np.unique(tr.item[tr.user == u])
    assert set(np.flatnonzero(row)) == set(rated)
    np.testing.assert_allclose(row[rated], 1 / np.sqrt(len(rated)))
    assert set(f.days) == set(np.unique(tr.day))
    d = f.blocks([u], [0], [99_999])[-1]                       # a day never seen in training: the empty row
    assert d.X[d.index].nnz == 0


def test_feature_spec_parsing():
    assert feature_terms('svd++') == FEATURE_SETS['svd++']
    assert feature_terms('timesvd+++genres') == FEATURE_SETS['timesvd++'] + ('genres',)
    assert feature_terms('timesvd+user_bin') == FEATURE_SETS['timesvd'] + ('user_bin',)
    assert feature_terms(['item', 'user']) == ('item', 'user')


@pytest.mark.parametrize('spec, err, match', [
    ('svd+', ValueError, 'unknown feature set'),
    ('flipped+colour', ValueError, "unknown feature term 'colour'"),
    (['user', 'user'], ValueError, 'given twice'),
    ([], ValueError, 'no terms'),
    (3, TypeError, 'feature-set name'),
    ('mf+genres', ValueError, "needs side"),
])
def test_bad_feature_specs(spec, err, match):
    with pytest.raises(err, match=match): RatingFeatures(spec)


def test_bad_inputs_get_clear_errors(data, model):
    nodays = Interactions(data.user, data.item, data.rating, None, data.n_users, data.n_items)
    with pytest.raises(ValueError, match='need rating days'): fit_bayes_fm(nodays, 'timesvd', progress=False)
    with pytest.raises(ValueError, match='need the rating day'): model.predict([0], [0])
    with pytest.raises(ValueError, match='n_bins'): RatingFeatures('mf', n_bins=0)
    with pytest.raises(ValueError, match='burn_in'): fit_bayes_fm(data, 'mf', n_samples=5, burn_in=5, progress=False)
    with pytest.raises(ValueError, match='backend'): fit_bayes_fm(data, 'mf', n_samples=2, burn_in=0, backend='cuda')
    X = sp.csr_matrix(np.eye(3))
    with pytest.raises(ValueError, match='add up to 2 columns'): check_blocks([Block(X, [0, 1], (('a', 2),))], 2)
    with pytest.raises(ValueError, match=r'in \[0, 3\)'): check_blocks([Block(X, [0, 3], (('a', 3),))], 2)
    with pytest.raises(ValueError, match='unique'): check_blocks([Block(X, [0, 1], (('a', 3),))] * 2, 2)
    with pytest.raises(ValueError, match='one row per rating'): check_blocks([Block(X, None, (('a', 3),))], 2)
    with pytest.raises(ValueError, match='2 entries for 4'): check_blocks([Block(X, [0, 1], (('a', 3),))], 4)
    with pytest.raises(TypeError, match='must be a Block'): check_blocks([X], 2)
    with pytest.raises(ValueError, match='NaN'): check_blocks([Block(sp.csr_matrix([[np.nan]]), [0], (('a', 1),))], 1)
    with pytest.raises(ValueError, match='linear_only names unknown'):
        sample_fm([1.0, 2.0], [Block(X, [0, 1], (('a', 3),))], n_samples=2, burn_in=0, linear_only=['b'])
    with pytest.raises(ValueError, match='fitted on'):
        model.posterior.predict([Block(X, [0], (('a', 3),))])


def test_prediction_protocol(data, model):
    assert isinstance(model, Predictor)
    with pytest.raises(ValueError, match='position 1'): model.predict([0, -1], [0, 0], [12_000, 12_000])
    with pytest.raises(ValueError, match='must lie'): model.predict([data.n_users], [0], [12_000])
    with pytest.raises(TypeError, match='integers'): model.predict([0.0], [0], [12_000])
    with pytest.raises(ValueError, match='one length'): model.predict([0, 1], [0], [12_000])
    # unseen users and items: finite predictions from the other terms, counted as fallbacks
    cold_u, cold_i = [data.n_users - 1, 0, data.n_users - 2], [0, data.n_items - 1, data.n_items - 1]
    p = model.predict(cold_u, cold_i, [12_000] * 3)
    assert np.isfinite(p).all() and 1.5 < p.mean() < 4.5
    assert model.info_ == {'pairs': 3, 'unseen_user': 2, 'unseen_item': 2, 'fallback': 3}
    # empty query
    e = model.predict([], [], [])
    assert e.shape == (0,) and model.info_['pairs'] == 0
    # unclipped, and evaluate uses the same protocol as every model
    out = evaluate(model, data, day=data.day)
    assert out['pairs'] == len(data) and out['fallback'] == 0 and out['rmse'] < 0.6
    # pickling keeps predictions
    m2 = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(m2.predict(data.user[:9], data.item[:9], data.day[:9]),
                                  model.predict(data.user[:9], data.item[:9], data.day[:9]))


def test_predictive_interval_is_calibrated_on_gaussian_data():
    d = make_data(n_users=80, n_items=60, density=0.4, noise=0.5, n_cold=0, seed=4)
    rng = np.random.default_rng(1)
    test = rng.random(len(d)) < 0.25
    tr, te = d.subset(np.flatnonzero(~test)), d.subset(np.flatnonzero(test))
    m = fit_bayes_fm(tr, 'mf', k=2, n_samples=150, burn_in=50, keep=40, progress=False)
    lo, hi = predictive_interval(m.posterior, m.features.blocks(te.user, te.item), 0.9)
    cover = float(np.mean((lo <= te.rating) & (te.rating <= hi)))
    assert 0.84 < cover < 0.96 and (lo < hi).all()
    with pytest.raises(ValueError, match='level'): predictive_interval(m.posterior, m.features.blocks([0], [0]), 1.5)


def test_nested_cv_fm_picks_from_grid(data):
    grid = [dict(features='mf', k=2), dict(features='svd++', k=2)]
    t = nested_cv_fm(data, grid, n_folds=3, folds=[0, 2], n_samples=12, burn_in=4)
    assert t.fold.tolist() == [0, 2] and set(t.features) <= {'mf', 'svd++'}
    assert (t.test_rmse < 1.0).all() and (t['inner 0'] > 0).all()
    with pytest.raises(ValueError, match='grid'): nested_cv_fm(data, [])


def _discrete(d):
    return Interactions(d.user, d.item, np.clip(np.rint(d.rating), 1, 5), d.day, d.n_users, d.n_items)


def test_ordered_probit_twin_probabilities_and_scale(data):
    d = _discrete(data)
    kw = dict(k=2, n_samples=8, burn_in=3, seed=3, val=d, likelihood='probit', progress=False)
    a = fit_bayes_fm(d, 'svd++', backend='numba', **kw)
    b = fit_bayes_fm(d, 'svd++', backend='numpy', **kw)
    np.testing.assert_allclose(a.posterior.cutpoints, b.posterior.cutpoints, rtol=1e-9)
    np.testing.assert_allclose(a.val_prediction, b.val_prediction, rtol=1e-8)
    P = a.predict_proba(d.user[:50], d.item[:50])
    assert P.shape == (50, len(a.levels)) and (P >= 0).all()
    np.testing.assert_allclose(P.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(a.predict(d.user[:50], d.item[:50]), P @ a.levels)
    th = a.posterior.cutpoints
    assert (th[:, 0] == 0).all() and (np.diff(th, axis=1) > 0).all()
    assert a.predict_proba([], []).shape == (0, len(a.levels))


def test_ordered_probit_fits_and_bad_inputs(data):
    d = _discrete(data)
    m = fit_bayes_fm(d, 'mf', k=2, n_samples=80, burn_in=30, val=d, likelihood='probit', progress=False)
    assert score(m.val_prediction, d.rating)['rmse'] < 0.7
    assert 0.02 < m.config['mh_acceptance'] < 0.9
    with pytest.raises(ValueError, match='whole numbers'):
        fit_bayes_fm(data, 'mf', n_samples=2, burn_in=0, likelihood='probit', progress=False)
    with pytest.raises(ValueError, match='every class'):
        sample_fm([0.0, 2.0], [Block(sp.csr_matrix(np.eye(2)), [0, 1], (('a', 2),))], n_samples=2, burn_in=0,
                  likelihood='probit')
    with pytest.raises(ValueError, match='likelihood'):
        sample_fm([0.0, 1.0], [Block(sp.csr_matrix(np.eye(2)), [0, 1], (('a', 2),))], n_samples=2, burn_in=0,
                  likelihood='logit')
    with pytest.raises(ValueError, match='ordered-probit'):
        fit_bayes_fm(data, 'mf', n_samples=2, burn_in=0, progress=False).posterior.predict_proba(
            RatingFeatures('mf').fit(data).blocks([0], [0]))


def test_probit_kernels_equal_numpy_functions_bit_for_bit():
    from thu_big_data_ml import fm
    r = np.random.default_rng(4)
    theta = np.array([0.0, 0.7, 1.5, 2.9]); t = np.concatenate([[-np.inf], theta, [np.inf]])
    yc = r.integers(0, 5, 3000); yhat = np.concatenate([r.normal(1.5, 3, 2990), [-40, 40, -9, 9, 0, 0.7, 1.5, 2.9, 60, -60]])
    K = fm._probit_kernels()
    out = np.empty(len(yc)); K['mass'](t, yc, yhat, out)
    np.testing.assert_array_equal(out, fm._interval_mass(*fm._class_bounds(theta, yc, yhat)))
    z, e = np.empty(len(yc)), np.empty(len(yc))
    K['latent'](t, yc, yhat, np.random.default_rng(9).random(len(yc)), z, e)
    ref = yhat + fm._truncated_normal(np.random.default_rng(9), *fm._class_bounds(theta, yc, yhat))
    np.testing.assert_array_equal(z, ref); np.testing.assert_array_equal(e, ref - yhat)
    acc = np.ones((len(yhat), 5)); K['proba_add'](acc, yhat, t)
    np.testing.assert_array_equal(acc, 1 + fm.class_probabilities(yhat, theta))


def test_compiled_val_prediction_equals_numpy_query(data):
    from thu_big_data_ml import fm
    f = RatingFeatures(FULL, n_bins=4).fit(data)
    blocks = check_blocks(f.blocks(data.user, data.item, data.day), len(data))
    offs = [int(o) for o in np.cumsum([0] + [b.width for b in blocks])[:-1]]
    p = sum(b.width for b in blocks); r = np.random.default_rng(1)
    Q = fm._Query(blocks, offs)
    w, V = r.normal(size=p), r.normal(size=(p, 3))
    np.testing.assert_allclose(Q.predict_compiled(0.3, w, V), Q.predict(0.3, w, V), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('backend', ['numba', 'numpy'])
def test_cached_row_sums_give_the_recomputed_chain(data, monkeypatch, backend):
    "Per-row factor sums kept between sweeps (refreshed every _REFRESH sweeps) = recomputed every sweep, up to rounding."
    from thu_big_data_ml import fm
    kw = dict(k=3, n_samples=12, burn_in=2, seed=7, val=data, n_bins=4, backend=backend, progress=False)
    monkeypatch.setattr(fm, '_REFRESH', 1); a = fit_bayes_fm(data, FULL, **kw)
    monkeypatch.setattr(fm, '_REFRESH', 10 ** 9); b = fit_bayes_fm(data, FULL, **kw)
    np.testing.assert_allclose(a.history.train_rmse, b.history.train_rmse, rtol=1e-9)
    np.testing.assert_allclose(a.posterior.state['V'], b.posterior.state['V'], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(a.val_prediction, b.val_prediction, rtol=1e-8)


def _myfm_kfold_reference(n, K, fold, random_state):
    "myfm.utils.benchmark_data.loader_base.train_test_split_with_kfold (myfm 0.4.0) on row positions, as myFM writes it."
    rns = np.random.RandomState(random_state)
    n_test = n // K + (1 if fold < n % K else 0)
    index = np.arange(n); rns.shuffle(index)
    start = (n // K) * fold + min(n % K, fold)
    return np.concatenate([index[:start], index[start + n_test:]]), index[start:start + n_test]


@pytest.mark.parametrize('n,K,fold', [(1_000_209, 10, 0), (1003, 10, 3), (57, 5, 4)])
def test_myfm_split_is_myfms_kfold_split(n, K, fold):
    from thu_big_data_ml.fm import myfm_split
    tr, te = myfm_split(n, K, fold, 0)
    rtr, rte = _myfm_kfold_reference(n, K, fold, 0)
    np.testing.assert_array_equal(te, rte); np.testing.assert_array_equal(tr, rtr)
    assert len(np.union1d(tr, te)) == n and not len(np.intersect1d(tr, te))
    with pytest.raises(ValueError, match='fold'): myfm_split(n, K, K)


def test_feature_table_rows_and_coverage():
    from types import SimpleNamespace
    from thu_big_data_ml.data import kfold_splits
    from thu_big_data_ml.fm import feature_table
    d = SimpleNamespace(train=make_data(seed=3))
    t = feature_table(d, None, [('mf', 'normal'), ('timesvd', 'normal')], folds=[1], n_samples=12, burn_in=4, k=2,
                      levels=(0.5, 0.9), keep=6)
    assert t.fold.tolist() == [1, 1] and t.features.tolist() == ['mf', 'timesvd']
    assert (t.rmse < 1.0).all() and (t['cover_0.5'] <= t['cover_0.9']).all() and t['cover_0.9'].between(0.5, 1).all()
    te = d.train.subset(kfold_splits(len(d.train), 5, 0)[1][1])
    m = fit_bayes_fm(d.train.subset(kfold_splits(len(d.train), 5, 0)[1][0]), 'mf', k=2, n_samples=12, burn_in=4, seed=1,
                     val=te, keep=6, progress=False)
    assert t.rmse.iloc[0] == pytest.approx(score(m.val_prediction, te.rating)['rmse'])     # same folds, same seed


def test_course_side_titles_and_years():
    from types import SimpleNamespace
    import pandas as pd
    from thu_big_data_ml.fm import course_side
    d = make_data(n_items=4, n_users=6, density=0.9, n_cold=0)
    titles = pd.DataFrame({'item_id': [1, 2, 3, 4], 'year': [1999.0, None, 2001.0, 1970.0],
                           'title': ['The Dark River', 'Dark Night', 'Blue River', 'The Night']})
    side = course_side(SimpleNamespace(train=d, titles=titles))
    assert side['items'].title.tolist() == titles.title.tolist() and np.isnan(side['items'].year[1])
    f = RatingFeatures('mf+title+year', side=side)
    with pytest.raises(ValueError, match='titles'): course_side(SimpleNamespace(train=d, titles=None))
    with pytest.raises(ValueError, match='rows'): course_side(SimpleNamespace(train=d, titles=titles.iloc[:3]))
    assert 'title' in f.terms
