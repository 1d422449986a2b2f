"Tests for thu_big_data_ml.selection: folds, prequential holdouts, Optuna studies that resume, nested CV, paired tests."
import subprocess, sys
import numpy as np
import pytest

optuna = pytest.importorskip('optuna')
from optuna.trial import TrialState

from thu_big_data_ml.data import Interactions, kfold_splits
import thu_big_data_ml.selection as sel
from thu_big_data_ml.selection import (SparseKFold, concat_interactions, cross_validate, cv_summary, prequential_split,
    prequential_rejection, prequential_violations, make_study, run_study, study_storage, suggest, als_objective, tune_cv,
    paired_tests, pareto_frame)


def toy(n_users=30, n_items=25, n=500, seed=0, unique=False):
    rng = np.random.default_rng(seed)
    if unique:
        pairs = rng.choice(n_users * n_items, n, replace=False)
        u, i = pairs // n_items, pairs % n_items
    else:
        u, i = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    return Interactions(u, i, rng.integers(1, 6, n).astype(np.float32), rng.integers(0, 20, n), n_users, n_items)


def test_import_star_standalone():
    out = subprocess.run([sys.executable, '-c', 'from thu_big_data_ml.selection import *; print(SparseKFold.__name__, tune_cv.__name__)'],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize('k', [2, 3, 5, 7])
def test_folds_disjoint_and_cover(k):
    d = toy()
    f = SparseKFold(d, k=k, seed=3)
    allidx = np.concatenate(f.piece_idx)
    assert len(allidx) == len(d) and len(np.unique(allidx)) == len(d)           # disjoint + cover
    for j in range(k):
        tr, te = f.get_fold(j)
        assert len(tr) + len(te) == len(d)
        ti = f.train_idx(j)
        assert len(np.intersect1d(ti, f.piece_idx[j])) == 0
        assert np.array_equal(np.sort(ti), kfold_splits(len(d), k, 3)[j][0])   # concatenation = the shared folds
        assert np.array_equal(tr.rating, d.rating[ti]) and np.array_equal(te.user, d.user[f.piece_idx[j]])


@pytest.mark.parametrize('k', [0, 1, -3, 2.5, True])
def test_folds_bad_k(k):
    with pytest.raises(ValueError):
        SparseKFold(toy(), k=k)


def test_fold_index_and_concat_errors():
    f = SparseKFold(toy(), k=3)
    with pytest.raises(IndexError): f.get_fold(3)
    with pytest.raises(ValueError): concat_interactions([])
    other = Interactions(np.zeros(1, int), np.zeros(1, int), np.ones(1, np.float32), None, 2, 2)
    with pytest.raises(ValueError): concat_interactions([toy(), other])


class MeanModel:
    def __init__(self, tr): self.m = float(tr.rating.mean())
    def predict(self, u, i): return np.full(len(u), self.m)


def test_cross_validate_table():
    d = toy()
    tab = cross_validate(MeanModel, SparseKFold(d, 4), progress=False)
    assert list(tab.fold) == [0, 1, 2, 3] and (tab.n_train + tab.n_test == len(d)).all()
    s = cv_summary(tab)
    assert s['min'] <= s['mean'] <= s['max']


@pytest.mark.parametrize('fn', [prequential_split, prequential_rejection])
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_prequential_ordering(fn, seed):
    rng = np.random.default_rng(seed)
    n = 3000
    user = rng.integers(0, 60, n)
    t = rng.integers(0, 40, n)                        # many ties on purpose (day resolution)
    tr, te = fn(user, t, holdout=0.1, seed=seed)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == n
    assert prequential_violations(user, t, tr, te) == 0
    for u in np.unique(user[te]):                     # explicit per-user check
        assert t[te][user[te] == u].min() >= t[tr][user[tr] == u].max()
    assert abs(len(te) - 0.1 * n) <= 1
    assert set(np.unique(user[tr])) == set(np.unique(user))       # every user keeps a training rating


def test_prequential_exact_quota_and_violation_detector():
    user = np.repeat(np.arange(10), 20); t = np.tile(np.arange(20), 10)
    tr, te = prequential_split(user, t, 0.1)
    assert (np.bincount(user[te]) == 2).all() and (t[te] >= 18).all()
    bad_te = np.flatnonzero(t == 0)                   # the oldest ratings: every user violates
    bad_tr = np.setdiff1d(np.arange(len(t)), bad_te)
    assert prequential_violations(user, t, bad_tr, bad_te) == 10


@pytest.mark.parametrize('frac', [0, 1, -0.1, 1.5, float('nan')])
def test_prequential_bad_fraction(frac):
    with pytest.raises(ValueError): prequential_split(np.zeros(10, int), np.arange(10), frac)
    with pytest.raises(ValueError): prequential_rejection(np.zeros(10, int), np.arange(10), frac)


def quad_objective(trial):
    x = trial.suggest_float('x', -3, 3)
    for s in range(3): trial.report((x - 1) ** 2 + 1.0 / (s + 1), s)
    return (x - 1) ** 2


def test_study_resumes_from_sqlite(tmp_path):
    url = study_storage('t', tmp_path)
    assert (tmp_path).exists() and url.startswith('sqlite:///')
    st = make_study('s', 'tpe', storage=url)
    assert run_study(st, quad_objective, 4, progress=False) == 4
    st2 = make_study('s', 'tpe', storage=url)                       # a new process would do exactly this
    assert len(st2.trials) == 4
    assert run_study(st2, quad_objective, 4, progress=False) == 0
    assert run_study(st2, quad_objective, 6, progress=False) == 2
    assert len(make_study('s', 'random', storage=url).trials) == 6
    # a RUNNING trial without heartbeats (asked by hand; it may belong to a live process) is left alone and does not
    # count; killed workers' trials (stale heartbeats) are failed and retried: tests/test_selection_hostile.py
    with pytest.warns(UserWarning, match='Heartbeat'):
        t = st2.ask()
    st3 = make_study('s', 'tpe', storage=url)
    assert run_study(st3, quad_objective, 7, progress=False) == 1
    states = [x.state for x in make_study('s', storage=url).trials]
    assert states.count(TrialState.FAIL) == 0 and states.count(TrialState.RUNNING) == 1
    assert states.count(TrialState.COMPLETE) == 7


def test_grid_and_random_samplers(tmp_path):
    url = study_storage('g', tmp_path)
    grid = {'a': [1, 2], 'b': [0.5, 1.5, 2.5]}
    st = make_study('grid', 'grid', grid, storage=url)
    run_study(st, lambda tr: sum(suggest(tr, grid).values()), 6, progress=False)
    assert sorted((t.params['a'], t.params['b']) for t in st.trials) == sorted((a, b) for a in [1, 2] for b in [0.5, 1.5, 2.5])
    rs = make_study('rand', 'random', storage=url, seed=1)
    run_study(rs, quad_objective, 5, progress=False)
    assert len(rs.trials) == 5 and rs.best_value >= 0
    with pytest.raises(ValueError): make_study('x', 'grid', None, storage=url)
    with pytest.raises(ValueError): make_study('x', 'bayes', storage=url)
    with pytest.raises(ValueError): run_study(rs, quad_objective, -1)
    df = pareto_frame(rs)
    assert (np.diff(df['best so far'].dropna().to_numpy()) <= 0).all()


def test_nested_cv_never_tunes_on_the_test_piece(tmp_path, monkeypatch):
    d = toy(n_users=30, n_items=25, n=400, unique=True)
    seen = []
    real = sel.fit_regularized_als
    def spy(train, *a, val=None, **kw):
        seen.append((set(zip(train.user.tolist(), train.item.tolist())), None if val is None else set(zip(val.user.tolist(), val.item.tolist()))))
        return real(train, *a, val=val, **kw)
    monkeypatch.setattr(sel, 'fit_regularized_als', spy)
    space = {'l2': ('float', 0.05, 0.5, True)}
    tab = tune_cv(d, k_outer=3, n_trials=2, space=space, fixed={'k': 2}, iters=2, study_prefix='nest',
                  storage=study_storage('n', tmp_path), progress=False)
    assert len(tab) == 3 and np.isfinite(tab.test_rmse).all() and (tab.trials == 2).all()
    f = SparseKFold(d, 3, 0)
    # per fold: 2 tuning fits then 1 refit; none of them sees that fold's test piece
    for j in range(3):
        test = set(zip(f.pieces[j].user.tolist(), f.pieces[j].item.tolist()))
        for tr, va in seen[3 * j:3 * j + 3]:
            assert not (tr & test) and (va is None or not (va & test))
    # rerun: nothing is re-tuned
    seen.clear()
    tab2 = tune_cv(d, k_outer=3, n_trials=2, space=space, fixed={'k': 2}, iters=2, study_prefix='nest',
                   storage=study_storage('n', tmp_path), progress=False)
    assert (tab2.ran_now == 0).all() and len(seen) == 3 and np.allclose(tab2.test_rmse, tab.test_rmse, atol=1e-6)


def test_paired_tests_against_scipy():
    from scipy import stats
    a = np.array([0.91, 0.92, 0.905, 0.915, 0.93]); b = a - np.array([0.01, 0.012, 0.008, 0.011, 0.009])
    r = paired_tests(a, b)
    assert r['p_t'] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert r['mean_diff'] == pytest.approx(0.01) and r['ci_low'] < 0.01 < r['ci_high']
    assert r['rank_biserial'] == pytest.approx(1.0) and r['p_wilcoxon'] == pytest.approx(0.0625)
    d = a - b
    assert r['cohen_dz'] == pytest.approx(d.mean() / d.std(ddof=1))
    with pytest.raises(ValueError): paired_tests(a, b[:3])
    with pytest.raises(ValueError): paired_tests([1.0], [2.0])


def test_both_fold_apis_give_the_same_inner_splits():
    "SparseKFold's training part is exactly data.subset(kfold_splits(...)[j][0]): inner hold-outs agree (chapter 10)."
    from thu_big_data_ml.data import holdout_split
    d = toy()
    f = SparseKFold(d, k=3, seed=1)
    for j, (tr_idx, te_idx) in enumerate(kfold_splits(len(d), 3, 1)):
        tr, te = f.get_fold(j)
        ref = d.subset(tr_idx)
        assert np.array_equal(tr.user, ref.user) and np.array_equal(tr.item, ref.item) and np.array_equal(tr.rating, ref.rating)
        a, b = holdout_split(len(tr), 0.1, seed=j), holdout_split(len(ref), 0.1, seed=j)
        assert all(np.array_equal(tr.subset(x).rating, ref.subset(y).rating) for x, y in zip(a, b))


def test_tune_cv_subset_of_folds_is_a_prefix_of_the_full_plan(tmp_path):
    "A reduced plan (`folds=[0]`) gives fold 0's row of the full plan; bad fold lists are errors."
    d = toy(n_users=30, n_items=25, n=400, unique=True)
    space = {'l2': ('float', 0.05, 0.5, True)}
    kw = dict(k_outer=3, n_trials=2, space=space, fixed={'k': 2}, iters=2, progress=False)
    one = tune_cv(d, study_prefix='a', storage=study_storage('a', tmp_path), folds=[0], **kw)
    full = tune_cv(d, study_prefix='b', storage=study_storage('b', tmp_path), **kw)
    assert list(one.fold) == [0] and list(full.fold) == [0, 1, 2]
    assert np.isclose(one.test_rmse.iloc[0], full.test_rmse.iloc[0], atol=1e-6)
    for bad in ([], [3], [0, 0], [-1]):
        with pytest.raises(ValueError, match='folds must be distinct'):
            tune_cv(d, study_prefix='c', storage=study_storage('c', tmp_path), folds=bad, **kw)


def test_start_from_and_nested_fingerprint():
    import pandas as pd
    tab = pd.DataFrame({'inner_val_rmse': [0.93, 0.91], 'l2': [0.3, 0.9], 'k': [32, 96], 'gram': [0.5, 1e-4]})
    space = sel.NESTED_PLAN['1m']['space']
    assert sel.start_from(tab, space) == [{'l2': 0.2, 'gram': 1e-3}]           # best row, clipped into the 1M ranges
    d = toy()
    fp = sel.nested_fingerprint(d, sel.NESTED_PLAN['1m'], [{'l2': 0.1}])
    assert fp == sel.nested_fingerprint(d, sel.NESTED_PLAN['1m'], [{'l2': 0.1}])
    assert fp != sel.nested_fingerprint(d, sel.NESTED_PLAN['1m'], [{'l2': 0.2}])


def test_study_storage_keyed_by_code(tmp_path, monkeypatch):
    "With deps, the study database's name carries the code digest: other code, other file (no resumed old trials)."
    import thu_big_data_ml.core as core
    plain = study_storage('s', tmp_path)
    a = study_storage('s', tmp_path, deps=['selection'])
    assert plain.endswith('/s.db') and a != plain and a == study_storage('s', tmp_path, deps=['selection'])
    monkeypatch.setattr(core, 'code_digest', lambda *m: 'f' * 32)
    b = study_storage('s', tmp_path, deps=['selection'])
    assert b.endswith(f"/s-{'f' * 12}.db") and b != a
