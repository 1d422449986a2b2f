"Tests for thu_big_data_ml.book_hpo: the book's HPO study (space, inner folds only, pruning over folds, claims, resuming)."
import numpy as np
import pandas as pd
import pytest

optuna = pytest.importorskip('optuna')

from thu_big_data_ml.data import Interactions
from thu_big_data_ml.selection import SparseKFold, study_storage
import thu_big_data_ml.book_hpo as bh


def toy(n_users=30, n_items=25, n=500, seed=0):
    rng = np.random.default_rng(seed)
    pairs = rng.choice(n_users * n_items, n, replace=False)
    return Interactions(pairs // n_items, pairs % n_items, rng.integers(1, 6, n).astype(np.float32), None, n_users, n_items)

TINY = {'lr': ('float', 0.6, 2.25), 'steps': ('int', 3, 6), 'k': ('int', 2, 4), 'prior_std': ('float', 0.5, 2.0),
        'l2': ('float', 0.05, 0.5), 'gram': ('float', 0.1, 0.75), 'decay_pct': ('float', 0.2, 0.8),
        'period_length': ('float', 1.0, 5.0)}
PLAN = dict(name='tiny', outer_fold=0, n_inner=2, n_trials=3, space=TINY, claims=True, seed=0)


def test_book_space_is_the_books_ranges():
    s = bh.BOOK_SPACE
    assert s['lr'][1:] == (0.6, 2.25) and s['k'][1:] == (15, 80) and s['prior_std'][1:] == (0.5, 2.0)
    assert s['l2'][1:] == (0.05, 0.5) and s['gram'][1:] == (0.1, 0.75) and s['decay_pct'][1:] == (0.2, 0.8)
    assert s['period_length'][1:] == (50.0, 500.0) and s['steps'][1:] == (1000, 3000) and len(s) == 8
    small = bh.BOOK_PLAN['small']['space']
    assert small['steps'][1:] == (100, 300) and small['period_length'][1:] == (5.0, 50.0) and small['lr'] == s['lr']


def test_inner_folds_never_hold_the_outer_test_piece():
    d = toy()
    folds, (otr, ote) = bh.inner_folds(d, PLAN)
    test = set(zip(ote.user.tolist(), ote.item.tolist()))
    outer_train = SparseKFold(d, 5, 0).get_fold(0)[0]
    assert len(otr) == len(outer_train) and sum(len(va) for _, va in folds) == len(otr)
    for tr, va in folds:
        for part in (tr, va):
            assert not set(zip(part.user.tolist(), part.item.tolist())) & test


def test_fit_book_is_the_books_model():
    d = toy()
    p = {'lr': 1.0, 'steps': 4, 'k': 3, 'prior_std': 0.5, 'l2': 0.1, 'gram': 0.2, 'decay_pct': 0.5, 'period_length': 2.0}
    m = bh.fit_book(d, p)
    assert m.U.shape == (30, 3) and m.bu is None and m.config['optimizer'] == 'sgd' and m.config['steps'] == 4
    assert m.config['init_std'] == 0.5 and m.config['biased'] is False


def test_study_resumes_reports_folds_and_checks_claims(tmp_path):
    d = toy()
    store = study_storage('b', tmp_path)
    res = bh.run_book_study(d, PLAN, storage=store)
    tr = pd.DataFrame(res['trials'])
    assert set(tr.sampler) == {'tpe', 'random'} and (tr.groupby('sampler').size() == 3).all()
    assert tr.folds_run.between(1, 2).all() and np.isfinite(tr.value).all()
    assert set(res['best']) == {'tpe', 'random'} and all(np.isfinite(b['outer_test_rmse']) for b in res['best'].values())
    claims = pd.DataFrame(res['claims'])
    assert list(claims.parameter) == ['prior_std', 'l2', 'k', 'gram', 'lr'] and claims.holds.dtype == bool
    # rerun with the same storage: the studies resume, no trial is added
    res2 = bh.run_book_study(d, {**PLAN, 'claims': False}, storage=store)
    assert len(res2['trials']['trial']) == len(res['trials']['trial']) and res2['claims'] is None
    assert bh.book_fingerprint(d, PLAN) != bh.book_fingerprint(d, {**PLAN, 'n_trials': 4})
