"""Hostile input for model selection (chapter 05) and Bayesian MF (chapter 10): NaN/inf times, NaN fold results,
degenerate paired tests, bad study arguments, concurrent Optuna workers on one SQLite file, a killed worker and its
resume, bad indices and unseen users for BayesMFModel, divergence, the code-keyed cache of nested_cv_bayes."""
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pandas as pd
import pytest

optuna = pytest.importorskip('optuna')
from optuna.trial import TrialState

from thu_big_data_ml import bayes, core
from thu_big_data_ml import selection as sel
from thu_big_data_ml.bayes import BayesMFModel, fit_bayes_mf, nested_cv_bayes
from thu_big_data_ml.core import CacheWarning, cached
from thu_big_data_ml.data import Interactions
from thu_big_data_ml.metrics import evaluate
from thu_big_data_ml.selection import (DegenerateTestWarning, SparseKFold, cross_validate, cv_summary, make_study,
                                       open_storage, paired_tests, prequential_rejection, prequential_split,
                                       prequential_violations, run_study, study_storage, tune_cv)

SPLITS = [prequential_split, prequential_rejection]


def toy(n_users=30, n_items=25, n=400, seed=0):
    rng = np.random.default_rng(seed)
    pairs = rng.choice(n_users * n_items, n, replace=False)
    return Interactions(pairs // n_items, pairs % n_items, rng.integers(1, 6, n).astype(np.float32),
                        rng.integers(0, 20, n), n_users, n_items)


def ratings(n_users=40, n_items=30, density=0.4, seed=0, drop_user=None, drop_item=None) -> Interactions:
    "Rank-2 ratings near 3; optionally without any rating of one user / one item (in range, unseen)."
    r = np.random.default_rng(seed)
    A, B = r.normal(size=(n_users, 2)), r.normal(size=(n_items, 2))
    u, i = np.nonzero(r.random((n_users, n_items)) < density)
    keep = np.ones(len(u), bool)
    if drop_user is not None: keep &= u != drop_user
    if drop_item is not None: keep &= i != drop_item
    u, i = u[keep], i[keep]
    x = np.clip(3.0 + 0.5 * (A[u] * B[i]).sum(1) + r.normal(0, 0.3, len(u)), 1, 5)
    return Interactions(u, i, x, None, n_users, n_items)


FAST = dict(k=2, n_samples=6, burn_in=2, backend='numpy', progress=False)


# ---------------------------------------------------------------- prequential splits: times and users

@pytest.mark.parametrize('fn', SPLITS)
@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_prequential_rejects_nonfinite_times(fn, bad):
    user = np.repeat(np.arange(5), 4); t = np.arange(20, dtype=float); t[7] = bad
    with pytest.raises(ValueError, match=r'NaN/inf values \(first at position 7\)'):
        fn(user, t, 0.25)


@pytest.mark.parametrize('fn', SPLITS)
def test_prequential_datetimes_ok_and_nat_rejected(fn):
    user = np.repeat(np.arange(4), 5)
    t = np.datetime64('2020-01-01') + np.tile(np.arange(5), 4).astype('timedelta64[D]')
    tr, te = fn(user, t, 0.2)
    assert prequential_violations(user, t, tr, te) == 0 and len(te) == 4
    t = t.copy(); t[3] = np.datetime64('NaT')
    with pytest.raises(ValueError, match='NaT'):
        fn(user, t, 0.2)


@pytest.mark.parametrize('fn', SPLITS)
@pytest.mark.parametrize('user,t,exc,match', [
    (np.zeros(5, int), np.arange(6), ValueError, 'one length'),
    (np.zeros(5, float), np.arange(5), TypeError, 'must be integers'),
    (np.array([0, 1, -1, 2, 0]), np.arange(5), ValueError, r'>= 0; position 2'),
    (np.zeros(5, int), np.ones(5, bool), TypeError, 'time must be real numbers'),
    (np.zeros(5, int), np.array(['a'] * 5), TypeError, 'time must be real numbers'),
    (np.zeros(4, int), np.zeros((2, 2)), ValueError, '1-d'),
])
def test_prequential_bad_user_or_time(fn, user, t, exc, match):
    with pytest.raises(exc, match=match):
        fn(user, t, 0.2)


@pytest.mark.parametrize('kw', [dict(min_train=-1), dict(min_train=1.5), dict(holdout=True)])
def test_prequential_bad_counts(kw):
    with pytest.raises(ValueError):
        prequential_split(np.zeros(10, int), np.arange(10), **{'holdout': 0.2, **kw})


def test_prequential_violations_checks_its_input():
    user, t = np.zeros(4, int), np.arange(4.0)
    with pytest.raises(ValueError, match=r'test_idx indices must lie in \[0, 4\)'):
        prequential_violations(user, t, np.array([0, 1]), np.array([4]))
    with pytest.raises(ValueError, match='NaN'):
        prequential_violations(user, np.array([0, np.nan, 1, 2]), np.array([0, 1]), np.array([2, 3]))
    big = np.array([2**60, 2**60 + 1, 2**60 + 2], np.int64)      # int64 times stay exact (no float rounding)
    assert prequential_violations(np.zeros(3, int), big, np.array([2]), np.array([0, 1])) == 1


# ---------------------------------------------------------------- NaN fold results

class NaNOnFold:
    "A fit function whose model predicts the training mean, but NaN in the `bad`-th fit (0-based)."
    def __init__(self, bad): self.bad, self.calls = bad, 0
    def __call__(self, tr):
        m, bad = float(tr.rating.mean()), self.calls == self.bad
        self.calls += 1
        class M:
            def predict(self, u, i): return np.full(len(u), np.nan if bad else m)
        return M()


@pytest.mark.parametrize('bad', [0, 2])
def test_cross_validate_nan_predictions_name_the_fold(bad):
    with pytest.raises(ValueError, match=f'cross_validate: fold {bad}: .*NaN/inf'):
        cross_validate(NaNOnFold(bad), SparseKFold(toy(), 4, seed=0), progress=False)
    assert len(cross_validate(NaNOnFold(99), SparseKFold(toy(), 4, seed=0), progress=False)) == 4


@pytest.mark.parametrize('value,match', [(np.nan, 'fold 7 scored nan'), (np.inf, 'fold 7 scored inf'),
                                         (-np.inf, 'fold 7 scored -inf')])
def test_cv_summary_nonfinite_is_an_error(value, match):
    tab = pd.DataFrame({'fold': [5, 6, 7], 'rmse': [0.9, 0.91, value]})
    with pytest.raises(ValueError, match=match):
        cv_summary(tab)


def test_cv_summary_empty_or_missing_column():
    with pytest.raises(ValueError, match='no folds'):
        cv_summary(pd.DataFrame({'rmse': []}))
    with pytest.raises(ValueError, match="no column 'mae'"):
        cv_summary(pd.DataFrame({'rmse': [0.9]}), 'mae')


def test_tune_cv_nan_test_score_names_the_fold(monkeypatch):
    real = sel.fit_regularized_als
    def refit_is_nan(train, *a, val=None, **kw):
        m = real(train, *a, val=val, **kw)
        if val is None:                                  # the refit on the outer training part
            class Broken:
                def predict(self, u, i): return np.full(len(u), np.nan)
            return Broken()
        return m
    monkeypatch.setattr(sel, 'fit_regularized_als', refit_is_nan)
    with pytest.raises(ValueError, match=r'tune_cv: fold 0: .*NaN/inf'):
        tune_cv(toy(), k_outer=2, n_trials=1, space={'l2': ('float', 0.05, 0.5, True)}, fixed={'k': 2}, iters=1,
                storage=':memory:', progress=False)


def test_tune_cv_no_completed_trial_names_the_fold(monkeypatch):
    monkeypatch.setattr(sel, 'als_objective', lambda *a, **kw: lambda trial: float('nan'))  # optuna fails NaN trials
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(ValueError, match='fold 0: .*no completed trial'):
            tune_cv(toy(), k_outer=2, n_trials=2, space={'l2': ('float', 0.05, 0.5)}, storage=':memory:', progress=False)


# ---------------------------------------------------------------- degenerate paired tests

def test_paired_identical_is_no_difference():
    a = np.array([0.91, 0.92, 0.905, 0.915, 0.93])
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        r = paired_tests(a, a.copy())
    assert r['degenerate'] == 'identical'
    assert all(np.isfinite(v) for k, v in r.items() if k != 'degenerate')
    assert r['cohen_dz'] == 0 and r['rank_biserial'] == 0 and r['p_t'] == 1 and r['p_wilcoxon'] == 1
    assert r['ci_low'] == r['ci_high'] == r['mean_diff'] == 0


def test_paired_constant_difference_is_flagged_not_infinite():
    a = np.array([0.91, 0.92, 0.905, 0.915, 0.93]); b = a - 0.01     # rounding makes the differences unequal by ~1e-17
    with pytest.warns(DegenerateTestWarning, match='undefined'):
        r = paired_tests(a, b)
    assert r['degenerate'] == 'constant difference'
    assert np.isnan(r['cohen_dz']) and np.isnan(r['t']) and not np.isinf(r['cohen_dz'])
    assert r['mean_diff'] == pytest.approx(0.01) and r['ci_low'] == r['ci_high'] == r['mean_diff']
    assert r['rank_biserial'] == 1.0 and r['p_t'] == 0.0 and 0 < r['p_wilcoxon'] <= 1


@pytest.mark.parametrize('a,b,exc', [([0.9, np.nan, 0.9], [0.9, 0.9, 0.9], ValueError),
                                     ([0.9, 0.9], [np.inf, 0.9], ValueError),
                                     (['x', 'y'], [0.9, 0.9], TypeError),
                                     ([[0.9, 0.9]], [[0.9, 0.9]], ValueError)])
def test_paired_bad_inputs(a, b, exc):
    with pytest.raises(exc):
        paired_tests(a, b)


# ---------------------------------------------------------------- bad study arguments

@pytest.mark.parametrize('kw,exc,match', [
    (dict(name=''), ValueError, 'non-empty'),
    (dict(name=3), ValueError, 'non-empty'),
    (dict(sampler='bayes'), ValueError, 'sampler'),
    (dict(direction='up'), ValueError, 'direction'),
    (dict(sampler='grid', space={'a': []}), ValueError, 'grid search'),
    (dict(sampler='grid', space=[1, 2]), ValueError, 'grid search'),
    (dict(storage=42), TypeError, 'storage'),
    (dict(storage='not a url'), ValueError, 'database URL'),
    (dict(heartbeat_interval=0), ValueError, 'heartbeat_interval'),
    (dict(heartbeat_interval=True), ValueError, 'heartbeat_interval'),
    (dict(heartbeat_interval=5, grace_period=5), ValueError, 'grace_period'),
    (dict(grace_period=30.5), ValueError, 'grace_period'),
    (dict(max_retry=-1), ValueError, 'max_retry'),
])
def test_bad_study_arguments(tmp_path, kw, exc, match):
    kw = {'name': 's', 'storage': study_storage('bad', tmp_path), **kw}
    with pytest.raises(exc, match=match):
        make_study(**kw)


@pytest.mark.parametrize('kw,exc', [(dict(n_trials=-1), ValueError), (dict(n_trials=2.5), ValueError),
                                    (dict(n_trials=True), ValueError), (dict(timeout=0), ValueError),
                                    (dict(timeout='1'), ValueError), (dict(objective=3), TypeError)])
def test_bad_run_arguments(kw, exc):
    st = make_study('r', 'random', storage=':memory:')
    kw = {'objective': lambda t: 0.0, 'n_trials': 1, **kw}
    with pytest.raises(exc):
        run_study(st, progress=False, **kw)
    assert not st.trials


def test_bad_storage_arguments(tmp_path):
    with pytest.raises(ValueError, match='timeout'):
        open_storage(study_storage('x', tmp_path), timeout=0)
    with pytest.raises(ValueError, match='plain file name'):
        study_storage('a/b', tmp_path)


# ---------------------------------------------------------------- several workers on one SQLite file (real processes)

def test_sqlite_transactions_take_the_write_lock_at_begin(tmp_path):
    "Every transaction is BEGIN IMMEDIATE on a WAL file: a second writer waits for the lock (here: times out at once)."
    import sqlite3
    url = study_storage('lock', tmp_path)
    st = open_storage(url, 1, 3, timeout=5)
    other = sqlite3.connect(tmp_path / 'lock.db', timeout=0, isolation_level=None)
    assert other.execute('PRAGMA journal_mode').fetchone()[0] == 'wal'
    with st.engine.connect() as c:
        with c.begin():
            c.exec_driver_sql('SELECT 1')                            # a read, yet the write lock is held
            with pytest.raises(sqlite3.OperationalError, match='locked'):
                other.execute('BEGIN IMMEDIATE')
    other.execute('BEGIN IMMEDIATE'); other.execute('ROLLBACK')     # released at commit
    other.close()


WORKER = textwrap.dedent('''
    import os, sys, time
    from thu_big_data_ml.selection import make_study, run_study
    url, name, n, sleep, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    def objective(trial):
        x = trial.suggest_float('x', -3, 3)
        trial.set_user_attr('pid', os.getpid())
        time.sleep(sleep)
        return (x - 1) ** 2
    st = make_study(name, 'random', storage=url, seed=seed, heartbeat_interval=1, grace_period=3)
    print('ran', run_study(st, objective, n, progress=False), flush=True)
''')


def _worker(tmp_path, url, name, n, sleep, seed):
    script = tmp_path / 'worker.py'
    if not script.exists(): script.write_text(WORKER)
    return subprocess.Popen([sys.executable, str(script), url, name, str(n), str(sleep), str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _load(url, name):
    return optuna.load_study(study_name=name, storage=open_storage(url, 1, 3))


def test_two_workers_share_one_study(tmp_path):
    url, n = study_storage('par', tmp_path), 16
    procs = [_worker(tmp_path, url, 'par', n, 0.25, seed) for seed in (1, 2)]   # both create/load at once
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    trials = _load(url, 'par').trials
    states = [t.state for t in trials]
    assert TrialState.FAIL not in states and TrialState.RUNNING not in states and TrialState.WAITING not in states
    done = states.count(TrialState.COMPLETE)
    assert n <= done <= n + 1                                    # the budget is shared, not doubled
    assert sum(int(o.split()[-1]) for o, _ in outs) == len(trials)
    assert len({t.user_attrs['pid'] for t in trials}) == 2       # both workers really ran trials
    assert all(t.value is not None and np.isfinite(t.value) for t in trials)


def test_killed_worker_resumes_with_nothing_lost(tmp_path):
    url, n = study_storage('kill', tmp_path), 6
    p = _worker(tmp_path, url, 'kill', n, 1.0, 0)
    deadline = time.time() + 60
    while True:
        assert time.time() < deadline and p.poll() is None, 'the worker never reached its third trial'
        time.sleep(0.05)
        try: st = _load(url, 'kill')
        except Exception: continue                               # not created yet
        ts = st.get_trials(deepcopy=False)
        running = [t for t in ts if t.state == TrialState.RUNNING]
        if sum(t.state == TrialState.COMPLETE for t in ts) >= 2 and len(running) == 1 and running[0].params: break
    os.kill(p.pid, signal.SIGKILL); p.communicate()
    st = _load(url, 'kill')
    before = {t.number: (t.params, t.value, t.datetime_complete) for t in st.get_trials(states=(TrialState.COMPLETE,))}
    killed = [t for t in st.get_trials() if t.state == TrialState.RUNNING]
    assert len(killed) == 1
    time.sleep(3 + 1.5)                                          # grace period + one heartbeat
    st = make_study('kill', 'random', storage=url, heartbeat_interval=1, grace_period=3)
    ran = run_study(st, lambda t: (t.suggest_float('x', -3, 3) - 1) ** 2, n, progress=False)
    trials = st.trials
    assert ran == n - len(before)                                # only the missing trials ran
    assert {t.number: (t.params, t.value, t.datetime_complete) for t in trials if t.number in before} == before
    by_number = {t.number: t for t in trials}
    assert by_number[killed[0].number].state == TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get('failed_trial') == killed[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == killed[0].params
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == n and states.count(TrialState.FAIL) == 1
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states


def test_trial_that_never_beat_is_failed_after_the_grace_period(tmp_path):
    st = make_study('silent', 'random', storage=study_storage('silent', tmp_path), heartbeat_interval=1, grace_period=2)
    with pytest.warns(UserWarning, match='Heartbeat'):
        t = st.ask()                                             # a worker that dies before its first heartbeat
    x = t.suggest_float('x', -3, 3)
    assert sel.fail_stale(st) == []                              # younger than the grace period: it may be alive
    time.sleep(2.5)
    assert sel.fail_stale(st) == [t.number] and sel.fail_stale(st) == []
    assert run_study(st, lambda tr: (tr.suggest_float('x', -3, 3) - 1) ** 2, 2, progress=False) == 2
    trials = st.trials
    assert [x_.state for x_ in trials].count(TrialState.FAIL) == 1
    retry = [r for r in trials if r.system_attrs.get('failed_trial') == t.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == {'x': x}


# ---------------------------------------------------------------- BayesMFModel: the prediction protocol

@pytest.fixture(scope='module')
def unseen_model():
    "Fitted without any rating of user 0 and item 1 (both in range)."
    return fit_bayes_mf(ratings(drop_user=0, drop_item=1), **FAST)


@pytest.mark.parametrize('user,item,exc,match', [
    ([40], [0], ValueError, r'user indices must lie in \[0, 40\)'),
    ([0], [30], ValueError, r'item indices must lie in \[0, 30\)'),
    ([-1], [0], ValueError, 'position 0 holds -1'),
    ([0.0], [0], TypeError, 'must be integers'),
    ([np.nan], [0], TypeError, 'NaN is not an index'),
    ([True], [0], TypeError, 'must be integers'),
    ([0, 1], [0], ValueError, 'one length'),
    ([[0]], [[0]], ValueError, '1-d'),
])
def test_bayes_bad_indices(unseen_model, user, item, exc, match):
    with pytest.raises(exc, match=match):
        unseen_model.predict(np.array(user), np.array(item))


def test_bayes_unseen_users_and_items_get_the_counted_fallback(unseen_model):
    m = unseen_model
    u, i = np.array([0, 0, 5, 5, 7]), np.array([1, 4, 1, 4, 9])
    p = m.predict(u, i)
    bu, bi = m.bu.astype(np.float64).mean(0), m.bi.astype(np.float64).mean(0)
    np.testing.assert_allclose(p[0], m.mu)                                   # both unseen: the global mean
    np.testing.assert_allclose(p[1], m.mu + bi[4], rtol=1e-6)                # unseen user: mu + item bias
    np.testing.assert_allclose(p[2], m.mu + bu[5], rtol=1e-6)                # unseen item: mu + user bias
    assert m.info_ == {'pairs': 5, 'unseen_user': 2, 'unseen_item': 2, 'fallback': 3}
    assert p.dtype == np.float64 and np.isfinite(p).all()
    assert m.predict([], []).shape == (0,) and m.info_['pairs'] == 0
    r = evaluate(m, Interactions(u, i, np.full(5, 3.0), None, 40, 30))
    assert r['fallback'] == 3 and r['n'] == 5


def test_bayes_val_prediction_uses_the_same_fallback():
    d = ratings(drop_user=0, drop_item=1)
    val = Interactions(np.array([0, 0, 3, 3]), np.array([1, 4, 1, 4]), np.array([3.0, 4.0, 2.0, 5.0]), None, 40, 30)
    m = fit_bayes_mf(d, val=val, keep=1000, **FAST)                   # thin 1: kept samples = all post-burn-in ones
    np.testing.assert_allclose(m.val_prediction, m.predict(val.user, val.item), rtol=1e-5)
    assert m.val_prediction[0] == pytest.approx(m.mu)


def test_bayes_predictions_unclipped_float_dtypes_agree_and_pickle():
    d = ratings()
    x64 = d.rating + np.random.default_rng(1).normal(0, 0.01, len(d))      # not representable in float32
    m64 = fit_bayes_mf((d.user, d.item, x64, 40, 30), **FAST)
    m32 = fit_bayes_mf((d.user, d.item, x64.astype(np.float32), 40, 30), **FAST)
    q = (np.arange(40).repeat(30), np.tile(np.arange(30), 40))
    p64, p32 = m64.predict(*q), m32.predict(*q)
    np.testing.assert_allclose(p64, p32, rtol=0, atol=1e-4)
    extreme = BayesMFModel(3.0, m64.W * 50, m64.V * 50, m64.bu, m64.bi, m64.history, user_count=m64.user_count,
                           item_count=m64.item_count)
    pe = extreme.predict(*q)
    assert (pe > 5).any() or (pe < 1).any()                        # no clipping inside predict
    back = pickle.loads(pickle.dumps(m64))
    np.testing.assert_array_equal(back.predict(*q), p64)
    assert back.info_ == m64.info_


@pytest.mark.filterwarnings('ignore::RuntimeWarning')   # numpy reports the overflow; the sampler must raise
def test_bayes_divergence_is_an_error(monkeypatch):
    d = ratings()
    huge = (d.user, d.item, 1e200 * (-1.0) ** np.arange(len(d)), 40, 30)   # finite ratings whose squares overflow
    with pytest.raises(FloatingPointError, match='diverged at sweep 0'):
        fit_bayes_mf(huge, **FAST)
    real = bayes._rows_reference
    calls = []
    def poisoned(*a):
        real(*a); calls.append(1)
        if len(calls) == 5: a[3][0] = np.nan                       # the residuals turn NaN in sweep 2
    monkeypatch.setattr(bayes, '_rows_reference', poisoned)
    with pytest.raises(FloatingPointError, match='diverged at sweep 2'):
        fit_bayes_mf(d, **FAST)


def test_bayes_bad_training_data():
    d = ratings()
    with pytest.raises(ValueError, match=r'user indices must lie in \[0, 10\)'):
        fit_bayes_mf((d.user, d.item, d.rating, 10, 30), **FAST)
    with pytest.raises(ValueError, match='NaN/inf'):
        fit_bayes_mf((d.user, d.item, np.where(np.arange(len(d)) == 2, np.inf, d.rating), 40, 30), **FAST)
    with pytest.raises(ValueError, match='keep'):
        fit_bayes_mf(d, **{**FAST, 'keep': 2.5})


# ---------------------------------------------------------------- nested_cv_bayes: fold results and the cache

def test_nested_cv_bayes_nan_fold_names_the_fold(monkeypatch):
    real = bayes.fit_bayes_mf
    def nan_on_refit(train, *a, val=None, **kw):
        m = real(train, *a, val=val, **kw)
        if len(val) > 100: m.val_prediction = np.full(len(val), np.nan)   # the outer test piece, not the inner split
        return m
    monkeypatch.setattr(bayes, 'fit_bayes_mf', nan_on_refit)
    with pytest.raises(ValueError, match=r'fold 1, test: .*NaN/inf'):
        nested_cv_bayes(ratings(), [{'k': 2}], n_folds=3, folds=[1], n_samples=4, burn_in=1, backend='numpy', progress=False)


@pytest.mark.parametrize('kw,match', [(dict(folds=[3]), 'folds must be'), (dict(folds=[True]), 'folds must be'),
                                      (dict(grid=[3]), 'grid must'), (dict(grid=[]), 'grid must')])
def test_nested_cv_bayes_bad_arguments(kw, match):
    kw = {'grid': [{'k': 2}], 'n_folds': 3, **kw}
    with pytest.raises(ValueError, match=match):
        nested_cv_bayes(ratings(), progress=False, **kw)


@pytest.fixture
def counted_nested(tmp_path, monkeypatch):
    "`cached(nested_cv_bayes)` in a temporary THU_BDML_CACHE, with a count of the fits it runs."
    monkeypatch.setenv(core.ENV_CACHE, str(tmp_path / 'cache'))
    real, fits = bayes.fit_bayes_mf, []
    def counting(*a, **kw): fits.append(1); return real(*a, **kw)
    monkeypatch.setattr(bayes, 'fit_bayes_mf', counting)
    run = cached(bayes.nested_cv_bayes, ignore=['progress'])
    args = (ratings(), [{'k': 2}], 3, 0.1, 0, [0])
    kw = dict(n_samples=4, burn_in=1, backend='numpy')
    return run, args, kw, fits


def test_nested_cv_bayes_cache_keyed_by_code(counted_nested, monkeypatch):
    run, args, kw, fits = counted_nested
    first = run(*args, True, **kw)
    assert len(fits) == 2                                          # one inner fit, one refit
    again = run(*args, False, **kw)                                # `progress` is not in the key
    assert len(fits) == 2 and again.equals(first)
    entry = run.entry(*args, **kw)
    assert run.info(*args, **kw)['deps'] == ['thu_big_data_ml.bayes']
    real = core.code_digest
    monkeypatch.setattr(core, 'code_digest', lambda *m: real(*m) + 'edited')
    assert run.entry(*args, **kw) != entry                         # a code change: a new entry ...
    run(*args, **kw)
    assert len(fits) == 4                                          # ... computed once
    run(*args, **kw)
    assert len(fits) == 4


def test_nested_cv_bayes_damaged_cache_entry_recomputed(counted_nested):
    run, args, kw, fits = counted_nested
    first = run(*args, **kw)
    res = run.entry(*args, **kw) / 'result.pkl'
    res.write_bytes(res.read_bytes()[:-7] + b'garbage')
    with pytest.warns(CacheWarning, match='damaged cache entry'):
        again = run(*args, **kw)
    assert len(fits) == 4 and again.drop(columns=['search_seconds', 'refit_seconds', 'sweep_ms', 'sweep_cpu_ms'], errors='ignore').equals(
        first.drop(columns=['search_seconds', 'refit_seconds', 'sweep_ms', 'sweep_cpu_ms'], errors='ignore'))
    run(*args, **kw)
    assert len(fits) == 4                                          # the repaired entry is used
