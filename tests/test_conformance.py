"""One conformance suite for every model class of the lab: the prediction protocol of `thu_big_data_ml.metrics`.

Each model declares a factory fitted on the shared small low-rank problem (tests/conftest.py: 60 users x 40 items,
1500 training ratings, three users and three items without any) and the band its clipped test RMSE must fall in
(the pattern of Surprise's test_unknown_user_or_item and LensKit's ScorerTests). Every model then answers the same
hostile queries: unseen users and items (finite, counted in `info_`, the documented fallback), bad ids (errors, never
a read outside the factor arrays), an empty query, pickling, float32 vs float64 training ratings, batch vs one pair
at a time, ratings beyond the scale (predict must not clip), and `metrics.evaluate`."""
import pickle
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest

from thu_big_data_ml.metrics import evaluate


@dataclass(frozen=True)
class Spec:
    name: str
    fit: Callable[[Any], Any]                 # training Ratings -> fitted model with predict(user, item)
    band: tuple[float, float] | None          # clipped test RMSE on the shared problem (noise floor about 0.42:
                                              # noise 0.3 + rounding); None: not a rating model
    tol32: float = 1e-5                       # predictions from float32 vs float64 training ratings
    both_unseen: Callable[[Any, Any], float] | None = None   # (model, train) -> the answer for an unseen user and item
                                                             # (None: the training mean)


def _cf(**kw):
    def fit(tr):
        from thu_big_data_ml.cf import NeighbourCF
        return NeighbourCF(**kw).fit(tr)
    return fit

def _lowrank_cf(tr):
    from thu_big_data_ml.lowrank_cf import LowRankUserCF
    return LowRankUserCF(rank=8, k=10).fit(tr)

def _cosine_cf(tr):
    from thu_big_data_ml.cf import CosineCF
    return CosineCF().fit(tr)

def _mf(**kw):
    def fit(tr):
        from thu_big_data_ml.mf import fit_mf
        return fit_mf(tr, k=4, progress=False, **kw)
    return fit

def _mf_ips(tr):
    from thu_big_data_ml.propensity import fit_mf_ips
    r = np.asarray(tr.rating, np.float64)
    p = 0.2 + 0.6 * (r - r.min()) / (r.max() - r.min())            # MNAR-like: high ratings observed more often
    return fit_mf_ips(tr, p, k=4, lam=1.0, method='als', biased=True, max_iter=30, progress=False)

def _reg_adam(tr):
    from thu_big_data_ml.regularization import fit_regularized
    return fit_regularized(tr, k=4, l2=0.1, steps=300, lr=0.05, progress=False)

def _reg_als(tr):
    from thu_big_data_ml.regularization import fit_regularized_als
    return fit_regularized_als(tr, k=4, l2=0.1, iters=15, progress=False)

def _bayes(tr):
    from thu_big_data_ml.bayes import fit_bayes_mf
    return fit_bayes_mf(tr, k=4, n_samples=60, burn_in=20, keep=20, progress=False)

def _time_mf(tr):
    from thu_big_data_ml.compare import fit_time_mf
    return fit_time_mf(tr, k=4, lam=2.0, n_bins=4, n_rounds=3, progress=False)

def _svd(tr):
    from thu_big_data_ml.latent import fit_svd
    return fit_svd(tr, k=4, fill='baseline', n_impute=3)

def _propensity(tr):
    from thu_big_data_ml.propensity import fit_logistic_propensity, interaction_features
    fu, fi = interaction_features(tr.user, tr.item, tr.rating, tr.n_users, tr.n_items)
    return fit_logistic_propensity(tr.user, tr.item, fu, fi, seed=0)

def _fm(features):
    def fit(tr):
        from thu_big_data_ml.fm import fit_bayes_fm
        return fit_bayes_fm(tr, features=features, k=4, n_samples=60, burn_in=20, keep=20, progress=False)
    return fit

def _coursework(tr):
    from thu_big_data_ml.big_data_analytics.matrix_decomposition import train_matrix_factorization
    model, _ = train_matrix_factorization(tr.dense(), None, k=4, lmd=0.5, lr=0.05, max_epochs=300,
                                          required_delta_loss=1e-6, backend='numba', progress=False)
    return model


SPECS = [
    Spec('NeighbourCF(user, cosine, k=None)', _cf(kind='user', sim='cosine'), (0.65, 0.85)),
    Spec('NeighbourCF(user, pearson_baseline, k=5)', _cf(kind='user', sim='pearson_baseline', target='baseline', k=5,
                                                         shrinkage=10), (0.45, 0.65)),
    Spec('NeighbourCF(item, cosine, mean, k=5)', _cf(kind='item', sim='cosine', target='mean', k=5), (0.6, 0.82)),
    Spec('NeighbourCF(item, pearson_baseline, k=None)', _cf(kind='item', sim='pearson_baseline', target='baseline',
                                                            shrinkage=10), (0.43, 0.63)),
    Spec('CosineCF', _cosine_cf, (0.65, 0.85)),
    Spec('LowRankUserCF(rank=8, k=10)', _lowrank_cf, (0.55, 0.9)),
    Spec('MFModel(gd, numba)', _mf(method='gd', backend='numba', lam=1.0, max_iter=300), (0.4, 0.58)),
    Spec('MFModel(als)', _mf(method='als', lam=1.0, max_iter=30), (0.4, 0.58)),
    Spec('MFModel(als, biased)', _mf(method='als', lam=1.0, biased=True, max_iter=30), (0.4, 0.58)),
    Spec('MFModel(fit_mf_ips)', _mf_ips, (0.4, 0.6), both_unseen=lambda m, tr: m.mu),   # mu: the IPS-weighted mean
    Spec('RegMF(fit_regularized)', _reg_adam, (0.4, 0.58)),
    Spec('RegMF(fit_regularized_als)', _reg_als, (0.4, 0.58)),
    Spec('BayesMFModel', _bayes, (0.4, 0.58)),
    Spec('TimeAwareMF', _time_mf, (0.4, 0.58)),
    Spec('SVDModel(baseline, hard-impute)', _svd, (0.4, 0.58)),
    Spec('LogisticPropensity', _propensity, None),
    Spec('MatrixFactorization (coursework)', _coursework, (0.4, 0.6)),
    Spec('BayesFM(mf)', _fm('mf'), (0.4, 0.6), both_unseen=lambda m, tr: float(m.posterior.w0.mean())),  # w0's posterior
    Spec('BayesFM(svd++)', _fm('svd++'), (0.4, 0.6), both_unseen=lambda m, tr: float(m.posterior.w0.mean())),
    Spec('MFModel(als, biased, every third user folded in)',
         lambda tr: __import__('thu_big_data_ml.foldin', fromlist=['_']).fit_then_fold_in(
             tr, np.arange(0, tr.n_users, 3), k=4, lam=1.0, method='als', biased=True, max_iter=30), (0.4, 0.6),
         both_unseen=lambda m, tr: m.mu),            # mu: the mean of the ratings fitted before the fold-in
    Spec('AutoRecModel', lambda tr: __import__('thu_big_data_ml.autorec', fromlist=['fit_autorec']).fit_autorec(
         tr, hidden=16, lam=10.0, lr=1e-2, max_epochs=150, batch_size=None, progress=False), (0.45, 0.62)),
]
IDS = [s.name for s in SPECS]

_FITS: dict = {}

def fitted(spec: Spec, train: Any, variant: str = 'float64') -> Any:
    "The model of `spec` fitted on `train` (each (model, variant) fitted once per session)."
    key = (spec.name, variant)
    if key not in _FITS: _FITS[key] = spec.fit(train)
    return _FITS[key]


@pytest.fixture(params=SPECS, ids=IDS)
def spec(request) -> Spec:
    return request.param


def _queries(d):
    "(user, item) arrays: 20 test pairs, then every kind of unseen pair."
    cu, ci, wu, wi = d.cold_users, d.cold_items, d.warm_users, d.warm_items
    u = np.r_[d.test.user[:20], cu[0], cu[1], wu[0], wu[1], cu[0], cu[2]]
    i = np.r_[d.test.item[:20], wi[0], wi[0], ci[0], ci[1], ci[0], ci[1]]
    return u, i


# ---------------------------------------------------------------- unseen users and items
def test_unseen_users_and_items_get_the_fallback_and_are_counted(spec, low_rank):
    d = low_rank; m = fitted(spec, d.train)
    cu, ci, wu, wi = d.cold_users, d.cold_items, d.warm_users, d.warm_items
    items = wi[:5]
    p_user = m.predict(np.full(5, cu[0]), items)                     # unseen user, seen items
    assert np.isfinite(p_user).all()
    assert m.info_['pairs'] == 5 and m.info_['unseen_user'] == 5 and m.info_['unseen_item'] == 0 and m.info_['fallback'] == 5
    np.testing.assert_allclose(m.predict(np.full(5, cu[1]), items), p_user, rtol=1e-6)   # any unseen user: the same answer
    users = wu[:5]
    p_item = m.predict(users, np.full(5, ci[0]))                     # seen users, unseen item
    assert np.isfinite(p_item).all() and m.info_['unseen_item'] == 5 and m.info_['unseen_user'] == 0
    np.testing.assert_allclose(m.predict(users, np.full(5, ci[2])), p_item, rtol=1e-6)
    p_both = m.predict(cu, ci)                                       # both unseen
    assert np.isfinite(p_both).all()
    assert m.info_ == {**m.info_, 'pairs': 3, 'unseen_user': 3, 'unseen_item': 3, 'fallback': 3}
    if spec.band is None:                                            # propensities
        p = np.r_[p_user, p_item, p_both]
        assert ((p > 0) & (p < 1)).all()
    else:                                                            # the documented last resort (the training mean)
        want = d.train.rating.mean() if spec.both_unseen is None else spec.both_unseen(m, d.train)
        np.testing.assert_allclose(p_both, want, rtol=1e-5)
    m.predict(d.test.user[:4], d.test.item[:4])                      # counts are per call
    assert m.info_['pairs'] == 4 and m.info_['fallback'] == 0


# ---------------------------------------------------------------- bad ids
BAD = {
    'float user': ([0.0, 1.0], [0, 1], TypeError),
    'float item': ([0, 1], [0.5, 1.0], TypeError),
    'NaN': ([np.nan], [0], TypeError),
    'bool': ([True, False], [0, 1], TypeError),
    'string': (['0'], [0], TypeError),
    'negative user': ([0, -1], [0, 0], ValueError),
    'negative item': ([0], [-1], ValueError),
    'user out of range': ([60], [0], ValueError),
    'item out of range': ([0, 1], [3, 40], ValueError),
    'far out of range': ([10 ** 9], [0], ValueError),
    'mismatched lengths': ([0, 1, 2], [0, 1], ValueError),
    '2-d': ([[0, 1]], [[0, 1]], ValueError),
}

@pytest.mark.parametrize('case', list(BAD))
def test_bad_ids_are_errors(spec, low_rank, case):
    u, i, err = BAD[case]
    m = fitted(spec, low_rank.train)
    with pytest.raises(err):
        m.predict(np.asarray(u), np.asarray(i))


def test_empty_query_gives_an_empty_float_array(spec, low_rank):
    m = fitted(spec, low_rank.train)
    for u, i in ((np.array([], np.int64), np.array([], np.int64)), ([], [])):
        p = np.asarray(m.predict(u, i))
        assert p.shape == (0,) and p.dtype.kind == 'f'


# ---------------------------------------------------------------- stability
def test_pickling_round_trip_predicts_identically(spec, low_rank):
    m = fitted(spec, low_rank.train)
    u, i = _queries(low_rank)
    back = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(np.asarray(back.predict(u, i)), np.asarray(m.predict(u, i)))


def test_float32_and_float64_training_ratings_agree(spec, low_rank):
    m64, m32 = fitted(spec, low_rank.train), fitted(spec, low_rank.train32, 'float32')
    u, i = _queries(low_rank)
    np.testing.assert_allclose(m32.predict(u, i), m64.predict(u, i), rtol=0, atol=spec.tol32)


def test_a_batch_equals_one_pair_at_a_time(spec, low_rank):
    m = fitted(spec, low_rank.train)
    u, i = _queries(low_rank)
    batch = np.asarray(m.predict(u, i), np.float64)
    assert batch.shape == (len(u),) and np.isfinite(batch).all()
    one = np.array([m.predict(u[j:j + 1], i[j:j + 1])[0] for j in range(len(u))], np.float64)
    np.testing.assert_allclose(batch, one, rtol=1e-6, atol=1e-6)
    assert float(m.predict(int(u[0]), int(i[0]))[0]) == pytest.approx(batch[0], rel=1e-6)   # scalars are pairs of one


def test_predict_does_not_clip_to_the_rating_scale(spec, low_rank):
    "Ratings shifted to 4..8: the fitted model must predict beyond 5 (clipping belongs to metrics.evaluate only)."
    if spec.band is None: pytest.skip('propensities are probabilities, not ratings')
    shifted = low_rank.train.with_ratings(low_rank.train.rating + 3.0)
    m = fitted(spec, shifted, 'shifted')
    p = np.asarray(m.predict(low_rank.test.user, low_rank.test.item), np.float64)
    assert (p > 5).mean() > 0.5 and p.max() > 6, (p.min(), p.mean(), p.max())
    e = evaluate(m, low_rank.test.with_ratings(low_rank.test.rating + 3.0), clip=None)
    assert e['rmse'] < 2 * spec.band[1]                              # shifted data, same accuracy scale


# ---------------------------------------------------------------- metrics.evaluate
def test_evaluate_scores_the_model_inside_its_band(spec, low_rank):
    m = fitted(spec, low_rank.train)
    test = low_rank.test
    if spec.band is None:                                            # a propensity model: probabilities in (0, 1)
        uu, ii = np.indices(test.shape).reshape(2, -1)
        p = m.predict(uu, ii)
        assert ((p > 0) & (p < 1)).all()
        assert 0.4 < p.mean() < 0.85, p.mean()                       # 1500 observed of 2400 pairs: 0.625
        assert p[np.isin(uu, low_rank.cold_users)].mean() < p.mean()      # never observed: less likely observed
        return
    e = evaluate(m, test)
    lo, hi = spec.band
    assert lo <= e['rmse'] <= hi, e
    assert e['n'] == len(test) and e['clipped'] >= 0 and e['mae'] <= e['rmse']
    assert e.get('pairs', len(test)) == len(test) and e.get('fallback', 0) == 0    # info_ merged: no unseen test pair
    raw = evaluate(m, test, clip=None)
    assert raw['rmse'] >= e['rmse'] - 1e-12                          # clipping never hurts on a 1..5 test set


# ---------------------------------------------------------------- property: any valid index arrays
from hypothesis import HealthCheck, given, settings, strategies as st   # noqa: E402

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_valid_indices_predict_as_one_at_a_time(spec, low_rank, data):
    "Random valid (user, item) arrays, repeats and unseen ids included, in any integer dtype: batch = pairs one by one."
    m = fitted(spec, low_rank.train)
    n = data.draw(st.integers(0, 12), label='n')
    u = data.draw(st.lists(st.integers(0, low_rank.train.n_users - 1), min_size=n, max_size=n), label='user')
    i = data.draw(st.lists(st.integers(0, low_rank.train.n_items - 1), min_size=n, max_size=n), label='item')
    dtype = data.draw(st.sampled_from([np.int64, np.int32, np.uint16, np.int16]), label='dtype')
    u, i = np.asarray(u, dtype), np.asarray(i, dtype)
    batch = np.asarray(m.predict(u, i), np.float64)
    assert batch.shape == (n,) and np.isfinite(batch).all()
    one = [float(np.asarray(m.predict(u[j:j + 1], i[j:j + 1]))[0]) for j in range(n)]
    np.testing.assert_allclose(batch, one, rtol=1e-6, atol=1e-6)
