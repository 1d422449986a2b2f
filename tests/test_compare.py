"""thu_big_data_ml.compare: the time-aware model beats plain biased MF on generated data with a time effect, and the
measuring / bucketing / interpretability helpers against plain references on small data."""
import sys

import numpy as np
import pandas as pd
import pytest

from thu_big_data_ml import compare as C
from thu_big_data_ml.data import Interactions, NetflixShape, generate_netflix_like, load_truth, read_course_files, holdout_split
from thu_big_data_ml.metrics import evaluate
from thu_big_data_ml.mf import fit_mf


@pytest.fixture(scope='module')
def timed(tmp_path_factory):
    "Small Netflix-shaped data whose generator has a strong time effect (item and user drift)."
    folder = tmp_path_factory.mktemp('gen_time')
    generate_netflix_like(folder, NetflixShape().small(time_effect=0.6, n_ratings=60_000, seed=3), overwrite=True, progress=False)
    d = read_course_files(folder, cache=False)
    d.truth = load_truth(folder, d)
    return d


def test_time_aware_model_beats_biased_mf_on_data_with_a_time_effect(timed):
    k, lam = 10, 5.0
    base = fit_mf(timed.train, k=k, lam=lam, method='als', biased=True, max_iter=12, progress=False)
    tm = C.fit_time_mf(timed.train, k=k, lam=lam, n_bins=10, n_rounds=6, als_sweeps=2, progress=False)
    te = timed.test
    r_base = evaluate(base, te)['rmse']
    r_time = evaluate(tm, te, day=te.day)['rmse']
    assert r_time < r_base - 0.005, (r_base, r_time)
    assert evaluate(tm, te)['rmse'] > r_time           # without days the time terms are off
    # started from the converged biased MF (as in the chapter), the time terms also give the gain
    warm = C.fit_time_mf(timed.train, k=k, lam=lam, n_bins=10, init=base, n_rounds=2, als_sweeps=1, progress=False)
    r_warm = evaluate(warm, te, day=te.day)['rmse']
    assert r_warm < r_base - 0.005, (r_base, r_warm)
    with pytest.raises(ValueError, match='init'): C.fit_time_mf(timed.train, k=k + 1, init=base, progress=False)
    # the learned item-bin biases follow the generator's item drift (positive drift -> rising bias)
    slope = tm.bbin[:, -1] - tm.bbin[:, 0]
    assert np.corrcoef(slope, timed.truth['item_drift'])[0, 1] > 0.3


def test_time_model_without_time_terms_is_biased_mf():
    "With every time term off, the objective is biased MF's: both fits reach the same training loss."
    rng = np.random.default_rng(0)
    n_u, n_i, n = 40, 30, 700
    u, i = rng.integers(0, n_u, n), rng.integers(0, n_i, n)
    key = np.unique(u * n_i + i); u, i = key // n_i, key % n_i
    tr = Interactions(u, i, rng.integers(1, 6, len(u)), None, n_u, n_i)
    lam = 2.0
    tm = C.fit_time_mf(tr, k=3, lam=lam, item_bins=False, user_drift=False, n_rounds=60, als_sweeps=2, progress=False)
    mf = fit_mf(tr, k=3, lam=lam, method='als', biased=True, max_iter=200, tol=1e-12, progress=False)
    def J(p, bu, bi, U, V):  # sum e^2 + 2 lam (|b|^2 + |U|^2 + |V|^2), the time model's scaling (= 2 x fit_mf's J)
        return ((tr.rating - p) ** 2).sum() + 2 * lam * ((bu ** 2).sum() + (bi ** 2).sum() + (U ** 2).sum() + (V ** 2).sum())
    j_t = J(tm.predict(u, i).astype(np.float64), tm.bu, tm.bi, tm.U, tm.V)
    j_m = J(mf.predict(u, i).astype(np.float64), mf.bu, mf.bi, mf.U, mf.V)
    assert j_t == pytest.approx(j_m, rel=0.02)
    # components add up to the prediction; days switch the (zero) time terms without changing it
    comp = tm.components(u[:5], i[:5])
    np.testing.assert_allclose(sum(comp.values()), tm.predict(u[:5], i[:5]), rtol=1e-5)


def test_fit_time_mf_bad_input():
    tr = Interactions([0, 1], [0, 1], [3, 4], None, 2, 2)
    with pytest.raises(ValueError, match='days'): C.fit_time_mf(tr, k=1)
    with pytest.raises(ValueError, match='k'): C.fit_time_mf(tr, k=-1, item_bins=False, user_drift=False)
    with pytest.raises(ValueError, match='lam'): C.fit_time_mf(tr, k=1, lam=-1, item_bins=False, user_drift=False)
    with pytest.raises(TypeError): C.fit_time_mf(np.zeros(3))
    m = C.fit_time_mf(tr, k=0, item_bins=False, user_drift=False, n_rounds=2, progress=False)
    with pytest.raises(ValueError, match='indices must lie'): m.predict(np.array([5]), np.array([0]))
    with pytest.raises(TypeError, match='integers'): m.predict(np.array([0.0]), np.array([0]))
    with pytest.raises(TypeError, match='day'): m.predict(np.array([0]), np.array([0]), day=np.array([1.5]))
    with pytest.raises(ValueError, match='one length'): m.predict(np.array([0, 1]), np.array([0]))


def test_time_model_fallback_for_unseen_users_and_items():
    "A user (item) without training ratings gets every user (item) term at 0, whatever the fit did; counted in info_."
    rng = np.random.default_rng(7)
    n_u, n_i, n = 30, 20, 400
    u, i = rng.integers(0, n_u - 1, n), rng.integers(0, n_i - 1, n)    # user 29 and item 19 stay unseen
    key = np.unique(u * n_i + i); u, i = key // n_i, key % n_i
    tr = Interactions(u, i, rng.integers(1, 6, len(u)), 15_000 + rng.integers(0, 900, len(u)), n_u, n_i)
    m = C.fit_time_mf(tr, k=3, lam=1.0, n_bins=4, n_rounds=3, progress=False)
    day = np.full(3, 15_500)
    p = m.predict(np.array([29, 0, 29]), np.array([0, 19, 19]), day)
    comp = m.components(np.array([0]), np.array([0]), day[:1])
    assert p[0] == pytest.approx(m.mu + comp['item'][0] + comp['item_time'][0])    # no user terms
    assert p[2] == pytest.approx(m.mu)
    assert m.info_ == {'pairs': 3, 'unseen_user': 2, 'unseen_item': 2, 'fallback': 3}
    assert m.U[29].any() == False and m.V[19].any() == False and m.bbin[19].any() == False


def test_year_bias_and_title_transfer():
    "Items sharing a title word and a release year with well-rated items inherit their bias when unseen."
    rng = np.random.default_rng(1)
    n_u, n_i = 60, 8
    titles = ['Star Quest', 'Star Quest II', 'Star Quest III', 'Quiet Garden', 'Quiet Garden Returns',
              'Star Quest IV', 'Quiet Garden 3', 'Nothing Shared']
    years = [1990, 1991, 1992, 2000, 2001, 1993, 2002, None]
    good = np.array([1, 1, 1, 0, 0, 1, 0, 0])           # 'Star Quest' films are loved, 'Quiet Garden' ones are not
    cold = np.array([5, 6])                              # never rated in training
    u, i = np.meshgrid(np.arange(n_u), np.setdiff1d(np.arange(n_i), cold)); u, i = u.ravel(), i.ravel()
    r = np.clip(np.round(np.where(good[i], 4.5, 1.5) + rng.normal(0, 0.5, len(u))), 1, 5)
    tr = Interactions(u, i, r, None, n_u, n_i)
    m = C.fit_time_mf(tr, k=0, item_bins=False, user_drift=False, titles=titles, n_rounds=4, progress=False)
    assert m.bi[5] > 0.5 and m.bi[6] < -0.5              # inherited from the title neighbours
    plain = C.fit_time_mf(tr, k=0, item_bins=False, user_drift=False, n_rounds=4, progress=False)
    assert plain.bi[5] == 0 and plain.bi[6] == 0
    my = C.fit_time_mf(tr, k=0, item_bins=False, user_drift=False, years=years, n_rounds=4, progress=False)
    assert my.byear[my.year_index[1]] > 0 and my.year_index[7] == -1
    S = C.title_similarity(titles)
    assert S[0, 1] > 0 and S[0, 3] == 0 and S[7].nnz == 0 and S.diagonal().sum() == 0
    assert C.title_tokens('The Lost Island (1999)') == ['lost', 'island']


def test_rmse_by_bucket_matches_a_loop():
    rng = np.random.default_rng(2)
    tr = Interactions(rng.integers(0, 20, 300), rng.integers(0, 15, 300), rng.integers(1, 6, 300), None, 20, 15)
    te = Interactions(rng.integers(0, 20, 100), rng.integers(0, 15, 100), rng.integers(1, 6, 100), None, 20, 15)
    p = rng.normal(3, 1.5, 100)
    assert (p < 1).any() and (p > 5).any()
    edges = (0, 1, 10, 20, np.inf)
    tab = C.rmse_by_bucket({'a': p}, te, tr, 'user', edges)                    # clipped to [1, 5] by default
    raw = C.rmse_by_bucket({'a': p}, te, tr, 'user', edges, clip=None)
    cnt = np.bincount(tr.user, minlength=20)[te.user]
    for (lo, hi), lab in zip(zip(edges[:-1], edges[1:]), tab.index):
        m = (cnt >= lo) & (cnt < hi)
        assert tab.loc[lab, 'test_ratings'] == m.sum()
        if m.any():
            assert tab.loc[lab, 'a'] == pytest.approx(np.sqrt(np.mean((np.clip(p[m], 1, 5) - te.rating[m]) ** 2)))
            assert raw.loc[lab, 'a'] == pytest.approx(np.sqrt(np.mean((p[m] - te.rating[m]) ** 2)))
    assert tab['test_ratings'].sum() == 100
    with pytest.raises(ValueError): C.rmse_by_bucket({'a': p[:5]}, te, tr)
    with pytest.raises(ValueError): C.rmse_by_bucket({'a': p}, te, tr, by='movie')


def test_nested_subsets_and_slopes():
    rng = np.random.default_rng(3)
    tr = Interactions(rng.integers(0, 50, 1000), rng.integers(0, 10, 1000), rng.integers(1, 6, 1000), None, 50, 10)
    te = Interactions(rng.integers(0, 50, 200), rng.integers(0, 10, 200), rng.integers(1, 6, 200), None, 50, 10)
    subs = C.nested_user_subsets(tr, te, (0.2, 0.5, 1.0), seed=0)
    assert [s[1].n_users for s in subs] == [10, 25, 50]
    assert len(subs[-1][1]) == len(tr) and len(subs[-1][2]) == len(te)
    # nested: the ratings of a smaller subset are among those of the larger one (same user mapping)
    key = lambda d: set(zip(d.user.tolist(), d.item.tolist(), d.rating.tolist()))
    assert key(subs[0][1]) <= key(subs[1][1]) <= key(subs[2][1])
    x = np.array([1e3, 1e4, 1e5]); b, a = C.loglog_slope(x, 3 * x ** 2)
    assert b == pytest.approx(2) and np.exp(a) == pytest.approx(3)
    with pytest.raises(ValueError): C.loglog_slope([1], [1])
    with pytest.raises(ValueError): C.nested_user_subsets(tr, te, (0, 1))


def test_scaling_study_runs_and_measures():
    rng = np.random.default_rng(4)
    tr = Interactions(rng.integers(0, 40, 800), rng.integers(0, 20, 800), rng.integers(1, 6, 800), None, 40, 20)
    te = Interactions(rng.integers(0, 40, 100), rng.integers(0, 20, 100), rng.integers(1, 6, 100), None, 40, 20)
    class Mean:
        def __init__(self, t): self.m = float(np.mean(t.rating))
        def predict(self, u, i): return np.full(len(u), self.m)
    df, preds = C.scaling_study(tr, te, {'mean': Mean}, fractions=(0.5, 1.0), progress=False, return_predictions=True)
    assert list(df.fraction) == [0.5, 1.0] and (df.fit_s >= 0).all() and (df.fit_peak_mb >= 0).all()
    assert preds['mean'].shape == (100,)
    assert df.rmse.iloc[-1] == pytest.approx(np.sqrt(np.mean((np.mean(tr.rating) - te.rating) ** 2)))
    class Wild(Mean):                     # predictions beyond the scale: kept unclipped, scored clipped
        def predict(self, u, i): return np.where(np.arange(len(u)) % 2, 9.0, -3.0)
    df, preds = C.scaling_study(tr, te, {'wild': Wild}, fractions=(1.0,), progress=False, return_predictions=True)
    assert preds['wild'].max() == 9 and df.clipped.iloc[0] == 100
    assert df.rmse.iloc[0] == pytest.approx(np.sqrt(np.mean((np.where(np.arange(100) % 2, 5, 1) - te.rating) ** 2)))
    with C.PeakMemory() as pm: big = np.ones(20_000_000)       # 160 MB
    assert pm.peak_bytes > 100 * 2**20 and pm.seconds > 0
    del big


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc heap reuse')
def test_peak_memory_counts_reused_heap_pages():
    "After many small frees the heap holds resident free pages; a new 80 MB array reuses them and RSS does not rise."
    import time
    xs = [np.ones(12_000) for _ in range(20_000)]; keep = np.ones(12_000); del xs      # ~1.9 GB freed, top pinned
    orig = C._release_free_heap
    try:
        C._release_free_heap = lambda: None                    # the old behaviour: the rise is hidden
        with C.PeakMemory() as pm: b = np.ones(10_000_000); time.sleep(0.05); del b
        hidden = pm.peak_bytes < 40 * 2**20                    # True with glibc here; other allocators may differ
    finally:
        C._release_free_heap = orig
    with C.PeakMemory() as pm: b = np.ones(10_000_000); time.sleep(0.05); del b
    assert pm.peak_bytes > 70 * 2**20, (pm.peak_bytes, hidden)
    del keep


def test_nearest_items_and_latent_extremes():
    V = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0], [0.5, 0.5]], float)
    titles = pd.DataFrame({'title': list('abcde'), 'year': [1, 2, 3, 4, 5]})
    nn = C.nearest_items(V, 0, titles, top=2)
    assert list(nn.item) == [1, 4] and list(nn.title) == ['b', 'e']
    nn = C.nearest_items(V, 0, titles, top=2, counts=np.array([9, 0, 9, 9, 9]), min_count=1)
    assert 1 not in set(nn.item)
    ex = C.latent_extremes(V, 0, titles, top=2)
    assert list(ex['top']) == ['a', 'b'] and list(ex['bottom']) == ['d', 'c']
    with pytest.raises(ValueError): C.latent_extremes(V, 5)
    with pytest.raises(ValueError): C.nearest_items(V, 9)


def test_cold_split():
    rng = np.random.default_rng(5)
    tr = Interactions(rng.integers(0, 100, 2000), rng.integers(0, 50, 2000), rng.integers(1, 6, 2000), None, 100, 50)
    keep, cu, ci = C.cold_split(tr, 0.1, 0.1, seed=0)
    assert len(cu) == 10 and len(ci) == 5
    assert not np.isin(tr.user[keep], cu).any() and not np.isin(tr.item[keep], ci).any()
    assert len(keep) == (~(np.isin(tr.user, cu) | np.isin(tr.item, ci))).sum()


def test_factor_dot_matches_its_reference():
    "The compiled U[u] . V[i] agrees with the plain gathered einsum (float32 and float64 factors, k = 0, no pairs)."
    rng = np.random.default_rng(8)
    for dt in (np.float32, np.float64):
        U, V = rng.normal(size=(30, 7)).astype(dt), rng.normal(size=(20, 7)).astype(dt)
        u, i = rng.integers(0, 30, 500), rng.integers(0, 20, 500)
        np.testing.assert_allclose(C.factor_dot(U, V, u, i), C._rowdot_reference(U, V, u, i), rtol=1e-12, atol=1e-12)
    assert C.factor_dot(U[:, :0], V[:, :0], u, i).tolist() == [0.0] * 500
    assert C.factor_dot(U, V, u[:0], i[:0]).shape == (0,)


def test_ridge_block_is_the_exact_minimiser():
    "One block update minimises sum (e - x b_g)^2 + reg |b|^2 over that block, the residual following the change."
    rng = np.random.default_rng(9)
    g, x, e0 = rng.integers(0, 5, 200), rng.normal(size=200), rng.normal(size=200)
    for xs, reg in ((None, 3.0), (x, 2.0), (None, np.arange(1.0, 6.0))):
        b, e = np.zeros(5), e0.copy()
        C._ridge_block(b, g, xs, reg, e)
        xx = np.ones(200) if xs is None else xs
        regs = np.broadcast_to(reg, 5)
        want = np.array([(xx[g == j] * e0[g == j]).sum() / ((xx[g == j] ** 2).sum() + regs[j]) for j in range(5)])
        np.testing.assert_allclose(b, want, rtol=1e-12)
        np.testing.assert_allclose(e, e0 - xx * want[g], rtol=1e-12, atol=1e-12)


def test_time_model_without_time_terms_is_biased_mf_with_count_penalties():
    "reg='count' scales the b and factor penalties by counts as fit_mf(reg='count'): both reach the same loss."
    rng = np.random.default_rng(10)
    n_u, n_i, n = 40, 30, 700
    u, i = rng.integers(0, n_u, n), rng.integers(0, n_i, n)
    key = np.unique(u * n_i + i); u, i = key // n_i, key % n_i
    tr = Interactions(u, i, rng.integers(1, 6, len(u)), None, n_u, n_i)
    lam = 0.1
    tm = C.fit_time_mf(tr, k=3, lam=lam, reg='count', item_bins=False, user_drift=False, n_rounds=60, als_sweeps=2,
                       progress=False)
    mf = fit_mf(tr, k=3, lam=lam, method='als', biased=True, reg='count', max_iter=200, tol=1e-12, progress=False)
    cu, ci = np.bincount(u, minlength=n_u), np.bincount(i, minlength=n_i)
    def J(p, bu, bi, U, V):
        return ((tr.rating - p) ** 2).sum() + 2 * lam * (cu @ (bu ** 2 + (U ** 2).sum(1)) + ci @ (bi ** 2 + (V ** 2).sum(1)))
    j_t = J(tm.predict(u, i).astype(np.float64), tm.bu, tm.bi, tm.U, tm.V)
    j_m = J(mf.predict(u, i).astype(np.float64), mf.bu, mf.bi, mf.U, mf.V)
    assert j_t == pytest.approx(j_m, rel=0.02)
    with pytest.raises(ValueError, match='reg'): C.fit_time_mf(tr, k=1, reg='ridge', item_bins=False, user_drift=False)


def test_time_ablation_and_refit(timed):
    "The validation stage scores the base and every variant; the refit of the chosen one starts from the full base."
    tr, va = C.validation_split(timed.train)
    kw = dict(k=4, lam=5.0, n_bins=6, n_rounds=1, als_sweeps=1)
    base = fit_mf(tr, k=4, lam=5.0, method='als', biased=True, max_iter=5, progress=False)
    tab, best, models = C.time_ablation(tr, va, base, None, {'static': dict(item_bins=False, user_drift=False),
                                                             'bins': dict(user_drift=False)}, **kw)
    assert list(tab.index) == ['biased MF', 'static', 'bins'] and best == tab['validation RMSE'].idxmin()
    assert tab.loc['bins', 'validation RMSE'] == pytest.approx(evaluate(models['bins'], va, day=va.day)['rmse'])
    full = fit_mf(timed.train, k=4, lam=5.0, method='als', biased=True, max_iter=5, progress=False)
    assert C.refit_chosen(timed.train, full, 'biased MF') is full
    m = C.refit_chosen(timed.train, full, 'bins', None, {'bins': dict(user_drift=False)}, **kw)
    assert m.config['item_bins'] and not m.config['user_drift'] and len(m.bu) == timed.train.n_users


def test_biased_mf_inner_is_choose_biased_mfs_validation_fit():
    "Read back along the same warm-start path, the inner fit has exactly the validation RMSE choose_biased_mf reports."
    from thu_big_data_ml.mf import choose_biased_mf
    rng = np.random.default_rng(11)
    n_u, n_i, n = 60, 40, 1500
    u, i = rng.integers(0, n_u, n), rng.integers(0, n_i, n)
    key = np.unique(u * n_i + i); u, i = key // n_i, key % n_i
    tr = Interactions(u, i, rng.integers(1, 6, len(u)), None, n_u, n_i)
    cands = ((10.0, 'uniform'), (1.0, 'uniform'), (0.1, 'count'), (0.05, 'count'))
    _, tab = choose_biased_mf(tr, k=3, candidates=cands, max_iter=30, tol=1e-5)
    _, va = C.validation_split(tr)
    for _, row in tab.iterrows():
        m = C.biased_mf_inner(tr, 3, row['lam'], row['reg'], candidates=cands, max_iter=30, tol=1e-5)
        assert evaluate(m, va)['rmse'] == pytest.approx(row['val RMSE'], abs=1e-6)
    with pytest.raises(ValueError, match='candidates'): C.biased_mf_inner(tr, 3, 7.0, 'uniform', candidates=cands)


def test_choose_lam_and_head_to_head():
    rng = np.random.default_rng(12)
    tr = Interactions(rng.integers(0, 30, 600), rng.integers(0, 20, 600), rng.integers(1, 6, 600), None, 30, 20)
    lam, scores = C.choose_lam(tr, True, 2, (1.0, 10.0), 3)
    assert lam == min(scores, key=scores.get) and set(scores) == {1.0, 10.0}
    tab, preds, models = C.head_to_head({'mf': lambda t: fit_mf(t, k=2, lam=lam, method='als', max_iter=2,
                                                                progress=False)}, tr, tr, keep=True)
    assert list(tab.index) == ['mf'] and preds['mf'].shape == (len(tr),) and 'mf' in models
    assert tab.loc['mf', 'rmse'] == pytest.approx(evaluate(models['mf'], tr)['rmse'])


def test_spark_fingerprint_names_the_plan():
    rng = np.random.default_rng(13)
    tr = Interactions(rng.integers(0, 5, 20), rng.integers(0, 4, 20), rng.integers(1, 6, 20), None, 5, 4)
    a = C.spark_fingerprint(tr, tr, 20, 5.0, (0.05, 0.1), 10)
    assert a == C.spark_fingerprint(tr, tr, 20, 5, [0.05, 0.1], 10)
    assert a != C.spark_fingerprint(tr, tr, 20, 2.0, (0.05, 0.1), 10)


def test_chapter_03s_kernel_copies_leave_fits_that_08s_module_call_reuses(tmp_path, monkeypatch):
    """Chapter 03's kernel runs its export cells, so it calls `__main__` copies of choose_biased_mf and fit_mf_cached;
    chapter 08 calls the module's. Both must key the same cache entries: 08 fits nothing (the 50 s miss of session 5)."""
    import inspect
    import thu_big_data_ml.mf as mf
    monkeypatch.setenv('THU_BDML_CACHE', str(tmp_path))
    ns = {'__name__': '__main__'}
    exec('from typing import Any\nimport pandas as pd\n'
         'from thu_big_data_ml.mf import BIASED_CANDIDATES, MFModel, fit_mf', ns)
    for f in (mf._fit_kw, mf.fit_mf_cached, mf.choose_biased_mf): exec(inspect.getsource(f), ns)   # as 03's kernel does
    calls, real = [], mf.fit_mf
    monkeypatch.setattr(mf, 'fit_mf', lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    ns['fit_mf'] = mf.fit_mf
    rng = np.random.default_rng(5)
    u, i = rng.integers(0, 50, 1200), rng.integers(0, 30, 1200)
    key = np.unique(u * 30 + i)
    tr = Interactions(key // 30, key % 30, rng.integers(1, 6, len(key)), None, 50, 30)
    cands = ((10.0, 'uniform'), (0.1, 'count'))
    a, tab_a = ns['choose_biased_mf'](tr, k=3, candidates=cands, max_iter=20, cache=True)     # chapter 03
    assert len(calls) == len(cands) + 1
    b, tab_b = mf.choose_biased_mf(tr, k=3, candidates=cands, max_iter=20, cache=True)        # chapter 08
    assert len(calls) == len(cands) + 1                                                        # every fit a cache hit
    pd.testing.assert_frame_equal(tab_a, tab_b)
    np.testing.assert_array_equal(a.U, b.U)
