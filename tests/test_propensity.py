"""Tests for thu_big_data_ml.propensity: unbiasedness by simulation, agreement with plain loops, bad arguments."""
import numpy as np
import pandas as pd
import pytest

from thu_big_data_ml.propensity import *

N_REPS = 400


def _world(n_users=60, n_items=80, seed=0, observed_fraction=0.15):
    "A small Schnabel-style world: low-rank scores mapped to ratings 1..5, MNAR propensities."
    rng = np.random.default_rng(seed)
    S = rng.normal(size=(n_users, 3)) @ rng.normal(size=(n_items, 3)).T + rng.normal(size=(n_users, n_items))
    Y = ratings_from_scores(S)
    P = mnar_propensity_matrix(Y, alpha=0.25, observed_fraction=observed_fraction)
    return Y, P


@pytest.fixture(scope='module')
def simulation():
    "Estimates of the MSE of ROTATE (and DCG@10 of SKEWED) over many observation sets, with correct propensities."
    Y, P = _world()
    pred = schnabel_predictions(Y, seed=0)
    rng = np.random.default_rng(1)
    bad_imputation = np.full(Y.shape, 3.0)                 # a poor imputation: DR must stay unbiased anyway
    t_mse = metric_terms('mse', Y, pred['ROTATE']); i_mse = metric_terms('mse', bad_imputation, pred['ROTATE'])
    W = topk_weights(pred['SKEWED'], 10, 'dcg')
    t_dcg = metric_terms('dcg', Y, pred['SKEWED'], weights=W); i_dcg = metric_terms('dcg', bad_imputation, pred['SKEWED'], weights=W)
    out = {('mse', m): [] for m in ESTIMATORS} | {('dcg', m): [] for m in ESTIMATORS}
    ses = {m: [] for m in ESTIMATORS}
    for _ in range(N_REPS):
        u, i = sample_observed(P, rng); p = P[u, i]
        for m, e in estimate_terms(t_mse, u, i, p, ESTIMATORS, i_mse).items():
            out['mse', m].append(e.value); ses[m].append(e.se)
        for m, e in estimate_terms(t_dcg, u, i, p, ESTIMATORS, i_dcg).items():
            out['dcg', m].append(e.value)
    return {k: np.array(v) for k, v in out.items()}, {k: np.array(v) for k, v in ses.items()}, \
        {'mse': true_value(t_mse), 'dcg': true_value(t_dcg)}


@pytest.mark.parametrize('metric', ['mse', 'dcg'])
@pytest.mark.parametrize('method', ['ips', 'dr'])
def test_ips_and_dr_unbiased_with_correct_propensities(simulation, metric, method):
    est, _, truth = simulation
    e = est[metric, method]
    se = e.std(ddof=1) / np.sqrt(len(e))
    assert abs(e.mean() - truth[metric]) < 3 * se, (metric, method, e.mean(), truth[metric], se)


@pytest.mark.parametrize('metric', ['mse', 'dcg'])
def test_naive_is_biased(simulation, metric):
    est, _, truth = simulation
    e = est[metric, 'naive']
    se = e.std(ddof=1) / np.sqrt(len(e))
    assert abs(e.mean() - truth[metric]) > 3 * se
    assert abs(e.mean() - truth[metric]) > 0.2 * abs(truth[metric])


def test_plug_in_variance_matches_spread(simulation):
    est, ses, _ = simulation
    for m in ('ips', 'dr', 'snips'):
        ratio = np.sqrt(np.mean(ses[m] ** 2)) / est['mse', m].std(ddof=1)
        assert 0.8 < ratio < 1.25, (m, ratio)


def test_snips_lower_spread_than_ips(simulation):
    est, _, _ = simulation
    assert est['mse', 'snips'].std() < est['mse', 'ips'].std()


def test_estimators_match_plain_loops():
    rng = np.random.default_rng(3)
    U, I, n = 7, 11, 30
    flat = rng.choice(U * I, n, replace=False); u, i = flat // I, flat % I
    d, p, dh = rng.random(n), rng.uniform(0.05, 1, n), rng.random(n)
    dh_all = rng.random((U, I)); dh_all[u, i] = dh
    ref = {'naive': sum(d) / n, 'ips': sum(a / b for a, b in zip(d, p)) / (U * I),
           'snips': sum(a / b for a, b in zip(d, p)) / sum(1 / b for b in p),
           'dr': (sum(dh_all.ravel()) + sum((a - c) / b for a, c, b in zip(d, dh, p))) / (U * I)}
    var_ips = sum(a * a * (1 - b) / b**2 for a, b in zip(d, p)) / (U * I) ** 2
    for m in ESTIMATORS:
        kw = dict(imputed=dh, imputed_total=dh_all.sum(1)) if m == 'dr' else {}
        e = risk_estimate(d, p, U, I, m, user=u, **kw)
        assert np.isclose(e.value, ref[m]), m
        assert np.isclose(risk_estimate(d, p, U, I, m, user=u, per='user', **kw).value, ref[m] * I), m
    assert np.isclose(risk_estimate(d, p, U, I, 'ips').se ** 2, var_ips)


def test_topk_weights_match_sorting():
    rng = np.random.default_rng(4)
    S = rng.integers(1, 6, size=(9, 15)).astype(float)       # many ties
    G = topk_weights(S, 4, 'dcg', seed=0).toarray()
    for u in range(9):
        nz = np.flatnonzero(G[u])
        assert len(nz) == 4
        ranks = np.argsort(-G[u][nz])                          # weights fall with rank
        chosen = nz[ranks]
        assert np.allclose(G[u][chosen], 1 / np.log2(np.arange(2, 6)))
        assert np.all(np.diff(S[u][chosen]) <= 0)              # ordered by score
        assert S[u][chosen].min() >= np.sort(S[u])[::-1][3]    # exactly a top-4 set
    H = topk_weights(S, 4, 'hit').toarray()
    assert set(np.unique(H)) == {0.0, 1.0} and (H.sum(1) == 4).all()


def test_recall_ratio_and_estimate_metric():
    Y, P = _world(seed=5, observed_fraction=0.15)
    pred = schnabel_predictions(Y, seed=1)['SKEWED']
    t = metric_terms('recall', Y, pred, k=10)
    truth = true_value(t)
    rel = Y >= 4; G = topk_weights(pred, 10, 'hit').toarray()
    assert np.isclose(truth, (G * rel).sum() / rel.sum())
    u, i = sample_observed(P, np.random.default_rng(0))
    e1 = estimate_terms(t, u, i, P[u, i], ('snips',))['snips']
    e2 = estimate_metric('recall', pred, u, i, Y[u, i], P[u, i], 'snips', k=10)
    assert np.isclose(e1.value, e2.value) and 0 <= e1.value <= 1
    e3 = estimate_metric('mse', pred, u, i, Y[u, i], P[u, i], 'dr', imputed_ratings=np.full(Y.shape, 2.0))
    assert np.isfinite(e3.value) and e3.se > 0


def test_bootstrap_interval_brackets_estimate():
    Y, P = _world(seed=6)
    pred = schnabel_predictions(Y)['COARSENED']
    t = metric_terms('mae', Y, pred)
    u, i = sample_observed(P, np.random.default_rng(2)); d, p = t.num[u, i], P[u, i]
    for m in ('naive', 'ips', 'snips'):
        e = risk_estimate(d, p, *Y.shape, m, user=u)
        lo, hi = bootstrap_interval(d, p, u, *Y.shape, m, n_boot=300)
        assert lo < e.value < hi
        assert 0.3 < (hi - lo) / (2 * 1.96 * e.se) < 3     # same order as the plug-in interval


def test_world_construction():
    rng = np.random.default_rng(0)
    Y = ratings_from_scores(rng.normal(size=(100, 200)))
    assert np.allclose(np.bincount(Y.ravel(), minlength=6)[1:] / Y.size, SCHNABEL_MARGINAL, atol=1e-3)
    P = mnar_propensity_matrix(Y, 0.25, 0.05)
    assert np.isclose(P.mean(), 0.05)
    assert np.allclose(P[Y == 2] / P[Y == 4].max(), 0.25 ** 2)
    assert np.allclose(P[Y == 5], P[Y == 4].max())
    pr = schnabel_predictions(Y, seed=0)
    assert set(pr) == {'REC_ONES', 'REC_FOURS', 'ROTATE', 'SKEWED', 'COARSENED'}
    n5 = (Y == 5).sum()
    assert (pr['REC_ONES'] == 5).sum() == 2 * n5 and ((pr['REC_ONES'] == 5) & (Y == 1)).sum() == n5
    assert ((pr['REC_FOURS'] == 5) & (Y == 4)).sum() == n5
    assert np.all(pr['ROTATE'][Y == 1] == 5) and np.all(pr['ROTATE'][Y == 3] == 2)
    assert set(np.unique(pr['COARSENED'])) == {3.0, 4.0} and np.all(pr['COARSENED'][Y <= 3] == 3)
    assert pr['SKEWED'].min() >= 0 and pr['SKEWED'].max() <= 6
    with pytest.raises(ValueError, match='k='):
        mnar_propensity_matrix(Y, 0.25, 0.9)


def test_naive_bayes_recovers_true_propensities():
    rng = np.random.default_rng(0)
    Y, P = _world(200, 300, seed=1, observed_fraction=0.05)
    u, i = sample_observed(P, rng)
    mc = rng.choice(Y.size, 4000, replace=False)
    nb = naive_bayes_propensity(Y[u, i], Y.ravel()[mc], Y.size)
    true = np.array([P[Y == r][0] for r in range(1, 6)])
    assert np.allclose(nb.values, true, rtol=0.3)
    assert np.allclose(propensity_of_ratings(Y[u, i], nb), nb.loc[Y[u, i].astype(float)].values)


@pytest.mark.parametrize('gamma', [-0.5, 0.0, 0.5])
def test_popularity_gamma_is_recovered(gamma):
    rng = np.random.default_rng(1)
    U, I = 3000, 800
    beta = (gamma + 1) / 2
    q = np.exp(rng.normal(-3, 1.0, I)).clip(max=0.9)          # true appeal
    expo = q ** (beta / (1 - beta)); expo = expo / expo.max() * 0.8
    n = rng.binomial(rng.binomial(U, q), expo)                # observed interactions
    t = rng.multinomial(20000, np.full(I, 1 / I)); y = rng.binomial(t, q)
    assert abs(fit_popularity_gamma(n, y, t) - gamma) < 0.15
    p = popularity_propensity(n, gamma, U)
    assert np.isclose(U * p.sum(), n.sum(), rtol=1e-6) or p.max() == 1.0


def test_logistic_propensity():
    rng = np.random.default_rng(0)
    U, I = 150, 200
    fu, fi = rng.normal(size=(U, 2)), rng.normal(size=(I, 2))
    Pm = 1 / (1 + np.exp(-(-3 + (fu @ [1.0, 0.0])[:, None] + (fi @ [0.0, 1.0])[None, :])))
    u, i = sample_observed(Pm, rng)
    m = fit_logistic_propensity(u, i, fu, fi, neg_ratio=5, seed=0)
    assert abs(m.intercept + 3) < 0.3 and abs(m.coef_user[0] - 1) < 0.2 and abs(m.coef_item[1] - 1) < 0.2
    assert np.isclose(m.predict(*np.indices((U, I)).reshape(2, -1)).mean(), Pm.mean(), rtol=0.15)
    # the protocol: counts of users / items without observations, index checks against the feature rows
    p = m.predict(np.r_[u[:3], 0], np.r_[i[:3], 0])
    assert p.dtype == np.float64 and ((p > 0) & (p < 1)).all() and m.info_['pairs'] == 4
    unseen_u = np.setdiff1d(np.arange(U), u)
    if len(unseen_u): m.predict(unseen_u[:1], i[:1]); assert m.info_['unseen_user'] == 1
    for bad, err in (((np.array([U]), np.array([0])), ValueError), ((np.array([0.5]), np.array([0])), TypeError),
                     ((np.array([0, 1]), np.array([0])), ValueError), ((np.array([-1]), np.array([0])), ValueError)):
        with pytest.raises(err): m.predict(*bad)
    with pytest.raises(ValueError, match='indices must lie'): fit_logistic_propensity(np.array([U]), np.array([0]), fu, fi)
    with pytest.raises(ValueError, match='indices must lie'): interaction_features([0, 5], [0, 1], [3.0, 4.0], 3, 3)


def test_stratification_and_simpson():
    # the kidney-stone numbers: A wins in both strata, B wins crude
    rows = [('A', 'small', 81, 87), ('A', 'large', 192, 263), ('B', 'small', 234, 270), ('B', 'large', 55, 80)]
    y, s, m = [], [], []
    for mod, st, k, n in rows:
        y += [1] * k + [0] * (n - k); s += [st] * n; m += [mod] * n
    t = stratified_comparison(y, s, m)
    assert is_simpson_reversal(t)
    assert t.loc['A', 'standardised'] > t.loc['B', 'standardised'] and t.loc['A', 'crude'] < t.loc['B', 'crude']
    e = stratified_estimate([1.0, 3.0, 2.0, 2.0], ['a', 'a', 'b', 'b'], {'a': 3, 'b': 1})
    assert np.isclose(e.value, 0.75 * 2 + 0.25 * 2)
    with pytest.raises(ValueError, match='stratum'):
        stratified_estimate([1.0, 3.0, 2.0], ['a', 'a', 'b'], {'a': 3, 'b': 1})


def test_clip_and_normalize():
    p = np.array([1e-5, 0.2, 0.9])
    assert clip_propensities(p, 0.01).min() == 0.01
    q = normalize_propensities(np.array([0.1, 0.2]), 30, counts=[100, 100])
    assert np.isclose((q * 100).sum(), 30)


@pytest.mark.parametrize('bad, msg', [([0.5, 0.0, 0.2], '> 0'), ([0.5, -0.1, 0.2], '> 0'),
                                      ([0.5, 1.2, 0.2], '<= 1'), ([0.5, np.nan, 0.2], 'NaN')])
def test_bad_propensities_are_rejected(bad, msg):
    with pytest.raises(ValueError, match=msg):
        risk_estimate([1.0, 2.0, 3.0], bad, 10, 10, 'ips')
    with pytest.raises(ValueError, match=msg):
        check_propensities(bad)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match='mismatched shapes'):
        risk_estimate([1.0, 2.0, 3.0], [0.5, 0.5], 10, 10, 'ips')
    with pytest.raises(ValueError, match='mismatched shapes'):
        risk_estimate([1.0, 2.0], [0.5, 0.5], 10, 10, 'ips', user=[0, 1, 2])
    with pytest.raises(ValueError, match='mismatched shapes'):
        risk_estimate([1.0, 2.0], [0.5, 0.5], 10, 10, 'dr', imputed=[1.0], imputed_total=1.0)
    with pytest.raises(ValueError, match='mismatched shapes'):
        risk_estimate([1.0, 2.0], [0.5, 0.5], 10, 10, 'dr', imputed=[1.0, 1.0], imputed_total=np.ones(3))
    with pytest.raises(ValueError, match='mismatched shapes'):
        metric_terms('mse', np.ones((3, 4)), np.ones((4, 3)))
    with pytest.raises(ValueError, match='mismatched shapes'):
        run_study(np.ones((3, 4)), np.full((3, 4), 0.5), {}, np.ones((4, 3)), n_reps=1, progress=False)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match='method'):
        risk_estimate([1.0], [0.5], 2, 2, 'ipw')
    with pytest.raises(ValueError, match='imputed'):
        risk_estimate([1.0], [0.5], 2, 2, 'dr')
    with pytest.raises(ValueError, match='per'):
        risk_estimate([1.0], [0.5], 2, 2, 'ips', per='item')
    with pytest.raises(ValueError, match='user indices'):
        risk_estimate([1.0], [0.5], 2, 2, 'ips', user=[5])
    with pytest.raises(ValueError, match='metric'):
        metric_terms('rmse', np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match='k must'):
        topk_weights(np.ones((2, 3)), 5)
    with pytest.raises(ValueError, match='gamma'):
        popularity_propensity([1, 2, 3], 2.0, 10)
    with pytest.raises(ValueError, match='lo'):
        clip_propensities([0.5], 0.0)
    with pytest.raises(ValueError, match='probs'):
        ratings_from_scores(np.ones((2, 2)), (0.5, 0.6))


def test_run_study_and_summary():
    Y, P = _world(30, 40, seed=8)
    pred = schnabel_predictions(Y, seed=0)
    pred = {k: pred[k] for k in ('ROTATE', 'COARSENED')}
    rng = np.random.default_rng(0)
    mc = rng.choice(Y.size, 300, replace=False)
    nb = lambda u, i, y: propensity_of_ratings(y, naive_bayes_propensity(y, Y.ravel()[mc], Y.size))
    est, truth = run_study(Y, P, pred, np.full(Y.shape, 2.5), n_reps=3, k=5, progress=False, estimated={'NB': nb})
    assert len(truth) == 2 * len(METRICS)
    assert set(est.method) == set(ESTIMATORS) | {'ips (NB)', 'snips (NB)'}
    assert len(est) == 3 * 2 * len(METRICS) * 6
    s = summarize_study(est, truth)
    assert {'bias', 'rmse', 'sd', 'coverage', 'bias_se'} <= set(s.columns)
    assert np.all(s.rmse >= s.bias.abs() - 1e-12)


def test_fit_mf_ips_is_weighted_fit_mf():
    from thu_big_data_ml.mf import fit_mf
    from thu_big_data_ml.data import Interactions
    Y, P = _world(40, 50, seed=9)
    u, i = sample_observed(P, np.random.default_rng(0))
    tr = Interactions(u, i, Y[u, i], None, *Y.shape)
    kw = dict(k=3, lam=1.0, method='als', biased=True, max_iter=5, progress=False, seed=0)
    plain = fit_mf(tr, **kw)
    const = fit_mf_ips(tr, np.full(len(u), 0.3), **kw)        # constant propensities: the unweighted fit
    assert np.allclose(plain.U, const.U, atol=1e-4) and np.allclose(plain.V, const.V, atol=1e-4)
    ips = fit_mf_ips(tr, P[u, i], **kw)
    assert not np.allclose(plain.V, ips.V, atol=1e-3)
    with pytest.raises(ValueError, match='mismatched shapes'):
        fit_mf_ips(tr, P[u, i][:-1], **kw)
    with pytest.raises(ValueError, match='> 0'):
        fit_mf_ips(tr, np.zeros(len(u)), **kw)


def test_study_tie_breaking_independent_of_observations():
    # regression: tie-breaking jitter drawn from the same stream as the first observation set made the top-K
    # entries of tied predictions systematically unobserved in replication 0
    Y, P = _world(120, 200, seed=10, observed_fraction=0.1)
    pred = {'REC_ONES': schnabel_predictions(Y, seed=3)['REC_ONES']}      # many tied 5s
    est, truth = run_study(Y, P, pred, np.full(Y.shape, 2.0), n_reps=40, metrics=('dcg',), methods=('ips',),
                           k=10, seed=0, progress=False)
    e = est.sort_values('rep').estimate.to_numpy()
    assert abs(e[0] - e[1:].mean()) < 4 * e[1:].std(ddof=1)


def test_run_study_fast_path_equals_the_checked_reference():
    "The study's fast replication (shared gathers and weights, no per-call checks) gives the reference's numbers."
    Y, P = _world(n_users=30, n_items=50, seed=3)
    pred = schnabel_predictions(Y, seed=1)
    nb_fit = lambda u, i, y: propensity_of_ratings(y, naive_bayes_propensity(y, Y[:3].ravel(), Y.size))
    kw = dict(n_reps=4, k=5, seed=2, progress=False, estimated={'NB': nb_fit})
    fast, truth_f = run_study(Y, P, pred, np.clip(Y + 0.5, 1, 5), **kw)
    ref, truth_r = run_study(Y, P, pred, np.clip(Y + 0.5, 1, 5), fast=False, **kw)
    pd.testing.assert_frame_equal(fast, ref, check_exact=True)
    pd.testing.assert_frame_equal(truth_f, truth_r)
    assert set(fast.method) == set(ESTIMATORS) | {'ips (NB)', 'snips (NB)'}
