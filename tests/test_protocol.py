"""The one nested-CV protocol (thu_big_data_ml.protocol): splits, selection, refit, bad input."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from thu_big_data_ml.data import Interactions, holdout_split, kfold_splits
from thu_big_data_ml.protocol import inner_splits, nested_cv


def toy(n=120, seed=0):
    rng = np.random.default_rng(seed)
    return Interactions(rng.integers(0, 12, n), rng.integers(0, 9, n), rng.integers(1, 6, n).astype(np.float32),
                        None, 12, 9)


class Mean:
    "A model predicting one constant: the training mean plus an offset (the 'setting')."
    def __init__(self, c): self.c = c
    def predict(self, user, item): return np.full(len(user), self.c)


def ids(d):
    return set(zip(d.user.tolist(), d.item.tolist(), d.rating.tolist()))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(30, 200), inner=st.one_of(st.floats(0.05, 0.5), st.integers(2, 4)), seed=st.integers(0, 50),
       fold=st.integers(0, 4))
def test_inner_splits_partition_the_outer_training_part(n, inner, seed, fold):
    d = toy(n, seed)
    parts = inner_splits(d, inner, seed, fold)
    assert len(parts) == (inner if isinstance(inner, int) else 1)
    for a, b in parts:
        assert len(a) + len(b) == n and len(b) >= 1
    if isinstance(inner, int):  # inner folds: validation parts cover the training part exactly once
        assert sum(len(b) for _, b in parts) == n
    else:                       # the lab's seeding rule: seed + 1 + fold
        assert np.array_equal(parts[0][1].rating, d.subset(holdout_split(n, inner, seed + 1 + fold)[1]).rating)


def test_nested_cv_chooses_on_inner_refits_on_outer_and_scores_the_test_fold_once():
    d = toy()
    calls = []
    def fit(train, setting, fold, stage, scored):
        calls.append((fold, stage, len(train), ids(scored) & ids(train)))
        return Mean(float(np.mean(train.rating)) + setting['off'])
    res = nested_cv(d, [{'off': 1.0}, {'off': 0.0}, {'off': -1.0}], fit, n_folds=4, inner=0.2)
    assert list(res.fold) == [0, 1, 2, 3] and (res['off'] == 0.0).all()   # the mean is the best constant
    outer = kfold_splits(len(d), 4, 0)
    refits = [c for c in calls if c[1] == 'refit']
    assert [c[2] for c in refits] == [len(outer[j][0]) for j in range(4)]
    assert len([c for c in calls if c[1] == 'inner']) == 4 * 3
    # duplicates of (user, item, rating) may exist in random toy data; positions never overlap:
    assert all(c[2] < len(d) for c in calls)
    assert (res['inner 1'] <= res[['inner 0', 'inner 2']].min(axis=1)).all()


def test_ties_pick_the_first_setting_and_folds_subset():
    d = toy()
    res = nested_cv(d, [{'off': 0.0, 'tag': 'a'}, {'off': 0.0, 'tag': 'b'}],
                    lambda tr, s, **_: Mean(3.0 + s['off']), folds=[2])
    assert list(res.fold) == [2] and res.tag.tolist() == ['a']


def test_bad_input_is_an_error_naming_the_problem():
    d = toy()
    fit = lambda tr, s, **_: Mean(3.0)
    with pytest.raises(ValueError, match='grid'): nested_cv(d, [], fit)
    with pytest.raises(ValueError, match='folds'): nested_cv(d, [{}], fit, folds=[5])
    with pytest.raises(ValueError, match='folds'): nested_cv(d, [{}], fit, folds=[True])
    with pytest.raises(ValueError, match='inner'): nested_cv(d, [{}], fit, inner=1.5)
    with pytest.raises(ValueError, match='inner'): inner_splits(d, 1)
    with pytest.raises(TypeError, match='inner'): inner_splits(d, True)
    nan = lambda tr, s, **_: Mean(np.nan)
    with pytest.raises(ValueError, match='fold 0, inner, setting 0'): nested_cv(d, [{}], nan, score=lambda m, x: np.nan)


def test_search_function_refine_describe_and_explicit_splits():
    d = toy()
    fit = lambda tr, s, **_: Mean(float(np.mean(tr.rating)) + s['off'])
    seen = []
    def search(parts, fold):
        seen.append((fold, [len(a) for a, _ in parts]))
        return {'off': 0.0}, 0.5, {'trials': 3}
    res = nested_cv(d, search, fit, n_folds=3, inner=2, describe=lambda m, te: {'n_test': len(te)})
    assert res.trials.tolist() == [3, 3, 3] and res.n_test.sum() == len(d) and res.inner_score.tolist() == [0.5] * 3
    assert [len(p) for _, p in seen] == [2, 2, 2]
    # refine: the refit's setting comes from the winning inner model (e.g. early stopping's epoch count)
    class Fitted(Mean):
        epochs = 7
    fit2 = lambda tr, s, **_: Fitted(3.0 + s.get('off', 0.0))
    res = nested_cv(d, [{'off': 0.0}], fit2, folds=[0], refine=lambda s, m: {**s, 'epochs': m.epochs})
    assert res.epochs.tolist() == [7]
    sp = [holdout_split(len(d), 0.1, 0)]
    res = nested_cv(d, [{'off': 0.0}], fit, splits=sp)
    assert len(res) == 1 and res.fold.tolist() == [0]
