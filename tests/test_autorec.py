"""Item-based AutoRec (thu_big_data_ml.autorec): PyTorch = JAX = the hand-derived gradient, the prediction protocol,
bad hyperparameters, the nested protocol never reading the test part, and accuracy above the item mean on ML-100K."""
import math
import pickle

import numpy as np
import pytest

from thu_big_data_ml.autorec import (AutoRecModel, adam, fit_autorec, forward, gradients, init_params, item_matrix,
                                     nested_autorec, objective)
from thu_big_data_ml.metrics import evaluate


@pytest.fixture(scope='module')
def small():
    "40 items x 60 users, 30% observed, integer ratings."
    rng = np.random.default_rng(0)
    R = np.where(rng.random((40, 60)) < 0.3, rng.integers(1, 6, (40, 60)), 0).astype(np.float32)
    i, u = np.nonzero(R)
    return (u, i, R[i, u].astype(np.float64), 60, 40)


def _dense(small):
    R, M = item_matrix(small)
    return R, M


# ---------------------------------------------------------------- one expression, three differentiations
def test_autodiff_matches_hand_derived_gradients(small):
    import jax, jax.numpy as jnp, torch
    R, M = _dense(small)
    P = init_params(60, 8, seed=2, mu=3.0)
    for share in (1.0, 0.25):
        ref = gradients(P, R, M, lam=3.0, share=share)
        Pt = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in P.items()}
        J = objective(Pt, torch.tensor(R, dtype=torch.float64), torch.tensor(M, dtype=torch.float64), 3.0, torch, share)
        gt = dict(zip(Pt, torch.autograd.grad(J, list(Pt.values()))))
        gj = jax.grad(objective)({k: jnp.asarray(v) for k, v in P.items()}, jnp.asarray(R), jnp.asarray(M), 3.0, jnp, share)
        for k in P:
            scale = np.abs(ref[k]).max()
            np.testing.assert_allclose(gt[k].numpy(), ref[k], rtol=0, atol=1e-10 * scale)
            np.testing.assert_allclose(np.asarray(gj[k]), ref[k], rtol=0, atol=1e-5 * scale)


def test_gradients_stay_finite_when_the_sigmoid_saturates():
    "sigmoid written (1 + tanh(z/2))/2: with z = -200 or +200 (1/(1+exp(-z)) overflows in float32) autodiff stays finite."
    import jax, jax.numpy as jnp, torch
    P = {'W1': np.full((3, 2), 40.0, np.float32), 'b1': np.zeros(2, np.float32), 'W2': np.ones((2, 3), np.float32),
         'b2': np.zeros(3, np.float32)}
    for sign in (1, -1):
        R = np.full((2, 3), 5.0 * sign / 3 * 5, np.float32); M = np.ones_like(R)     # z = +-200
        gj = jax.grad(objective)({k: jnp.asarray(v) for k, v in P.items()}, jnp.asarray(R), jnp.asarray(M), 1.0, jnp)
        Pt = {k: torch.tensor(v, requires_grad=True) for k, v in P.items()}
        gt = torch.autograd.grad(objective(Pt, torch.tensor(R), torch.tensor(M), 1.0, torch), list(Pt.values()))
        assert all(np.isfinite(np.asarray(g)).all() for g in gj.values()) and all(torch.isfinite(g).all() for g in gt)


def test_objective_counts_observed_entries_only(small):
    "J = sum over the observed triples of (h(r_i)_u - r_ui)^2 + lam/2 (|W1|^2 + |W2|^2): unobserved outputs carry no loss."
    u, i, r, _, _ = small
    R, M = _dense(small)
    P = {k: v.astype(np.float64) for k, v in init_params(60, 8, seed=2, mu=3.0).items()}
    _, out = forward(P, R.astype(np.float64), np)
    want = float(((out[i, u] - r) ** 2).sum()) + 1.5 * float((P['W1'] ** 2).sum() + (P['W2'] ** 2).sum())
    assert math.isclose(float(objective(P, R.astype(np.float64), M, 3.0, np)), want, rel_tol=1e-12)


def test_adam_matches_torch_optim(small):
    import torch
    rng = np.random.default_rng(1)
    P = {'w': rng.normal(size=(5, 3))}
    Pt = torch.tensor(P['w'], requires_grad=True); opt = torch.optim.Adam([Pt], lr=0.01)
    S = {'m': {'w': np.zeros((5, 3))}, 'v': {'w': np.zeros((5, 3))}}
    for t in range(1, 6):
        g = rng.normal(size=(5, 3))
        P, S = adam(P, {'w': g}, S, t, 0.01, np)
        opt.zero_grad(); Pt.grad = torch.tensor(g); opt.step()
    np.testing.assert_allclose(P['w'], Pt.detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('batch_size', [None, 16])
def test_jax_equals_torch_from_the_same_init(small, batch_size):
    init = init_params(60, 12, seed=5, mu=3.0)
    kw = dict(hidden=12, lam=2.0, lr=1e-2, max_epochs=6, batch_size=batch_size, init=init, seed=3, progress=False)
    mt, mj = fit_autorec(small, backend='torch', **kw), fit_autorec(small, backend='jax', **kw)
    assert len(mt.history) == len(mj.history) == 6
    np.testing.assert_allclose(mt.history.loss, mj.history.loss, rtol=1e-5)
    assert mt.history.loss.iloc[-1] < mt.history.loss.iloc[0]
    for k in ('W1', 'b1', 'W2', 'b2', 'H'):
        np.testing.assert_allclose(getattr(mt, k), getattr(mj, k), rtol=0, atol=1e-5, err_msg=k)
    u, i = small[0][:50], small[1][:50]
    np.testing.assert_allclose(mt.predict(u, i), mj.predict(u, i), atol=1e-4)
    assert not np.array_equal(mt.W1, init['W1'])      # it trained


# ---------------------------------------------------------------- the prediction protocol
@pytest.fixture(scope='module')
def model(small):
    u, i, r, nu, ni = small
    keep = (u != 59) & (i != 39)                        # user 59 and item 39 unseen
    return fit_autorec((u[keep], i[keep], r[keep], nu, ni), hidden=8, lam=1.0, lr=1e-2, max_epochs=20,
                       batch_size=None, progress=False), (u[keep], i[keep], r[keep])


def test_seen_pairs_are_the_network(model):
    m, (u, i, r) = model
    H, out = forward({k: getattr(m, k) for k in ('W1', 'b1', 'W2', 'b2')}, item_matrix((u, i, r, 60, 40))[0], np)
    np.testing.assert_allclose(m.predict(u[:30], i[:30]), out[i[:30], u[:30]], rtol=1e-5)
    np.testing.assert_allclose(m.H, H, rtol=1e-5, atol=1e-7)      # (1 + tanh(z/2)) / 2: absolute float32 precision near 0
    assert m.info_ == {'pairs': 30, 'unseen_user': 0, 'unseen_item': 0, 'fallback': 0}


def test_unseen_users_and_items_get_the_counted_fallback(model):
    m, (u, i, r) = model
    mu = r.mean()
    bi0 = (r[i == 0] - mu).sum() / ((i == 0).sum() + 5)
    bu0 = (r[u == 0] - mu).sum() / ((u == 0).sum() + 5)
    p = m.predict([59, 0, 59], [0, 39, 39])
    np.testing.assert_allclose(p, [mu + bi0, mu + bu0, mu], rtol=1e-12)
    assert m.info_ == {'pairs': 3, 'unseen_user': 2, 'unseen_item': 2, 'fallback': 3}


@pytest.mark.parametrize('user,item,err', [([60], [0], ValueError), ([0], [40], ValueError), ([-1], [0], ValueError),
                                           ([0.0], [0], TypeError), ([0, 1], [0], ValueError), ([True], [0], TypeError)])
def test_bad_queries_are_errors(model, user, item, err):
    with pytest.raises(err): model[0].predict(user, item)


def test_empty_query_pickle_and_no_clipping(model, small):
    m, _ = model
    assert m.predict([], []).shape == (0,)
    back = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(back.predict(small[0], small[1]), m.predict(small[0], small[1]))
    u, i, r, nu, ni = small
    hi = fit_autorec((u, i, r + 3.0, nu, ni), hidden=8, lam=1.0, lr=1e-2, max_epochs=20, batch_size=None, progress=False)
    assert (hi.predict(u, i) > 5).mean() > 0.5                     # predict does not clip; evaluate does


def test_float32_and_float64_ratings_agree(small):
    u, i, r, nu, ni = small
    kw = dict(hidden=8, lam=1.0, lr=1e-2, max_epochs=5, batch_size=None, progress=False)
    a, b = fit_autorec((u, i, r, nu, ni), **kw), fit_autorec((u, i, r.astype(np.float32), nu, ni), **kw)
    np.testing.assert_allclose(a.predict(u, i), b.predict(u, i), atol=1e-6)


# ---------------------------------------------------------------- bad arguments
@pytest.mark.parametrize('kw,msg', [
    (dict(hidden=0), 'hidden'), (dict(hidden=2.0), 'hidden'), (dict(hidden=True), 'hidden'), (dict(lam=-1.0), 'lam'),
    (dict(lam=float('inf')), 'lam'), (dict(lr=0.0), 'lr'), (dict(lr=float('nan')), 'lr'), (dict(max_epochs=0), 'max_epochs'),
    (dict(batch_size=0), 'batch_size'), (dict(patience=0), 'patience'), (dict(backend='tensorflow'), 'backend'),
    (dict(damping=-1.0), 'damping'), (dict(lam='1'), 'lam')])
def test_bad_hyperparameters_are_rejected(small, kw, msg):
    with pytest.raises(ValueError, match=msg): fit_autorec(small, progress=False, **kw)


def test_bad_data_and_init_are_rejected(small):
    u, i, r, nu, ni = small
    with pytest.raises(ValueError, match='more than once'): fit_autorec((np.r_[u, u[:1]], np.r_[i, i[:1]], np.r_[r, r[:1]], nu, ni), progress=False)
    with pytest.raises(ValueError, match='NaN'): fit_autorec((u, i, np.where(np.arange(len(r)) == 3, np.nan, r), nu, ni), progress=False)
    with pytest.raises(ValueError, match='init shapes'): fit_autorec(small, hidden=4, init=init_params(60, 5), progress=False)
    bad = init_params(60, 4); bad['W1'][0, 0] = np.nan
    with pytest.raises(ValueError, match='NaN'): fit_autorec(small, hidden=4, init=bad, progress=False)
    with pytest.raises(ValueError, match='one index space'): fit_autorec(small, hidden=4, val=(u[:5], i[:5], r[:5], 61, 40), progress=False)
    with pytest.raises(ValueError, match='GPU'): fit_autorec(small, hidden=4, backend='jax', device='cuda', progress=False)
    with pytest.raises(FloatingPointError, match='lower lr'):
        fit_autorec(small, hidden=4, lr=1e30, lam=1e30, max_epochs=5, batch_size=None, progress=False)


# ---------------------------------------------------------------- the nested protocol
def test_nested_protocol_never_reads_the_test_part(low_rank):
    from thu_big_data_ml.data import kfold_splits
    tr = low_rank.train
    splits = kfold_splits(len(tr), 3, seed=0)[:1]       # one split: another split's test part is this one's training
    kw = dict(hidden=8, lr=1e-2, max_epochs=30, patience=5, batch_size=None)
    a = nested_autorec(tr, splits, [{'lam': 1.0}, {'lam': 10.0}], **kw)
    noisy = tr.with_ratings(tr.rating.copy())
    for _, te in splits: noisy.rating[te] = 6 - noisy.rating[te]       # change every test rating
    b = nested_autorec(noisy, splits, [{'lam': 1.0}, {'lam': 10.0}], **kw)
    assert a.lam.tolist() == b.lam.tolist() and a.epochs.tolist() == b.epochs.tolist()
    np.testing.assert_allclose(a.inner_rmse, b.inner_rmse)
    assert not np.allclose(a.test_rmse, b.test_rmse)
    assert np.isfinite(a.test_rmse).all() and (a.item_mean_rmse > 0).all() and (a.epochs <= 30).all()
    with pytest.raises(ValueError, match='grid'): nested_autorec(tr, splits, [])
    with pytest.raises(TypeError, match='val'): nested_autorec(tr, splits, [{}], val=tr)


# ---------------------------------------------------------------- accuracy on real data
def test_beats_the_item_mean_on_movielens_100k():
    from thu_big_data_ml.data import kfold_splits, load_movielens
    d = load_movielens('100k').train
    tr_idx, te_idx = kfold_splits(len(d), 5, seed=0)[0]
    tr, te = d.subset(tr_idx), d.subset(te_idx)
    m = fit_autorec(tr, hidden=64, lam=30.0, lr=3e-3, max_epochs=8, batch_size=256, backend='jax', progress=False)
    n = np.bincount(tr.item, minlength=tr.n_items)
    item_mean = np.where(n > 0, np.bincount(tr.item, tr.rating, tr.n_items) / np.maximum(n, 1), tr.rating.mean())
    base = evaluate(type('ItemMean', (), {'predict': lambda self, u, i: item_mean[i]})(), te)['rmse']
    got = evaluate(m, te)['rmse']
    assert got < base - 0.03, (got, base)
