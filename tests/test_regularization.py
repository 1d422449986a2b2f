"Tests for thu_big_data_ml.regularization: losses (JAX vs PyTorch vs dense reference), Gramian identity, ALS vs gradient."
import subprocess, sys
import numpy as np
import pytest

jax = pytest.importorskip('jax')
import jax.numpy as jnp
import torch

from thu_big_data_ml.data import Interactions
from thu_big_data_ml.regularization import (observed_mse, l2_term, bias_l2_term, gramian_term, gramian_term_dense,
    logistic_loss, regularized_loss, wals_weights, frequency_scale, lr_decay, lr_decay_schedule, observed_mse_torch,
    l2_term_torch, gramian_term_torch, logistic_loss_torch, fit_regularized, fit_regularized_als, p_sale, RegMF)


def toy(n_users=40, n_items=30, n=600, seed=0):
    rng = np.random.default_rng(seed)
    return Interactions(rng.integers(0, n_users, n), rng.integers(0, n_items, n), rng.integers(1, 6, n).astype(np.float32),
                        None, n_users, n_items)


def test_import_star_standalone():
    out = subprocess.run([sys.executable, '-c', 'from thu_big_data_ml.regularization import *; print(fit_regularized_als.__name__)'],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'fit_regularized_als' in out.stdout


@pytest.mark.parametrize('N,M,k', [(1, 1, 1), (7, 3, 2), (30, 50, 5), (64, 16, 8)])
def test_gramian_identity(N, M, k):
    rng = np.random.default_rng(N * 100 + M)
    p = {'users': jnp.asarray(rng.normal(size=(N, k))), 'items': jnp.asarray(rng.normal(size=(M, k)))}
    fast, dense = float(gramian_term(p)), float(gramian_term_dense(p))
    ref = np.sum((np.asarray(p['users']) @ np.asarray(p['items']).T) ** 2) / (N * M)
    assert fast == pytest.approx(ref, rel=1e-4)
    assert dense == pytest.approx(ref, rel=1e-4)
    assert float(gramian_term_torch(torch.tensor(np.asarray(p['users'])), torch.tensor(np.asarray(p['items'])))) == pytest.approx(ref, rel=1e-4)


def test_torch_twins_equal_jax():
    rng = np.random.default_rng(1)
    d = toy()
    U, V = rng.normal(size=(40, 4)).astype(np.float32), rng.normal(size=(30, 4)).astype(np.float32)
    bu, bi = rng.normal(size=40).astype(np.float32), rng.normal(size=30).astype(np.float32)
    w = wals_weights(d.user, d.item, 40, 30, 'both', 0.7)
    su, si = frequency_scale(d.user, 40, 0.5), frequency_scale(d.item, 30, 0.5)
    p = {'users': jnp.asarray(U), 'items': jnp.asarray(V), 'user_bias': jnp.asarray(bu), 'item_bias': jnp.asarray(bi)}
    T = lambda x: torch.tensor(np.asarray(x))
    ui, ii = T(d.user.astype(np.int64)), T(d.item.astype(np.int64))
    assert float(observed_mse(p, d.user, d.item, d.rating, w, 3.5)) == pytest.approx(
        float(observed_mse_torch(T(U), T(V), ui, ii, T(d.rating), T(w), 3.5, T(bu), T(bi))), rel=1e-5)
    assert float(l2_term(p, su, si)) == pytest.approx(float(l2_term_torch(T(U), T(V), T(su), T(si))), rel=1e-5)
    y = (d.rating >= 4).astype(np.float32)
    assert float(logistic_loss(p, d.user, d.item, y, w)) == pytest.approx(
        float(logistic_loss_torch(T(U), T(V), ui, ii, T(y), T(w), 0.0, T(bu), T(bi))), rel=1e-5)


def test_losses_against_plain_numpy():
    d = toy(); rng = np.random.default_rng(2)
    U, V = rng.normal(size=(40, 3)), rng.normal(size=(30, 3))
    p = {'users': jnp.asarray(U), 'items': jnp.asarray(V)}
    pred = np.sum(U[d.user] * V[d.item], 1)
    assert float(observed_mse(p, d.user, d.item, d.rating)) == pytest.approx(np.mean((d.rating - pred) ** 2), rel=1e-4)
    assert float(l2_term(p)) == pytest.approx((U ** 2).sum() / 40 + (V ** 2).sum() / 30, rel=1e-5)
    assert float(bias_l2_term(p)) == 0.0
    y = (d.rating >= 4).astype(float)
    ce = -(y * np.log(1 / (1 + np.exp(-pred))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-pred))))
    assert float(logistic_loss(p, d.user, d.item, y)) == pytest.approx(ce.mean(), rel=1e-4)
    tot, terms = regularized_loss(p, {'user': d.user, 'item': d.item, 'rating': d.rating}, {'l2': 0.3, 'gram': 0.7})
    assert float(tot) == pytest.approx(float(terms['omse'] + 0.3 * terms['l2_loss'] + 0.7 * terms['gr_loss']), rel=1e-6)


def test_weights_and_scales():
    d = toy()
    w = wals_weights(d.user, d.item, 40, 30, 'user', 1.0)
    assert w.mean() == pytest.approx(1.0, rel=1e-5)
    cnt = np.bincount(d.user, minlength=40)[d.user]
    assert np.allclose(w * cnt, (w * cnt)[0], rtol=1e-4)       # inversely proportional to the user's count
    s = frequency_scale(d.item, 30, 0.0)
    assert np.allclose(s, 1.0)
    with pytest.raises(ValueError): wals_weights(d.user, d.item, 40, 30, 'users')
    with pytest.raises(ValueError): frequency_scale(d.user, 40, -1.0)


def test_lr_decay_matches_schedule():
    sch = lr_decay_schedule(0.8, 0.5, 100.0)
    for s in [0, 1, 98, 99, 100, 250, 999]:
        assert float(sch(s)) == pytest.approx(lr_decay(s, 0.8, 0.5, 100.0), rel=1e-6)
    assert lr_decay(98, 1.0, 0.5, 100) == 1.0 and lr_decay(99, 1.0, 0.5, 100) == 0.5


def test_als_block_is_stationary_point_of_jax_objective():
    d = toy()
    w = wals_weights(d.user, d.item, 40, 30, 'user', 0.5)
    m = fit_regularized_als(d, k=3, l2=0.3, gram=0.5, freq_alpha=0.5, weights=w, iters=6, progress=False)
    p = {'users': jnp.asarray(m.U), 'items': jnp.asarray(m.V), 'user_bias': jnp.asarray(m.bu), 'item_bias': jnp.asarray(m.bi)}
    batch = {'user': d.user, 'item': d.item, 'rating': d.rating, 'weights': w, 'mu': m.mu,
             'user_scale': frequency_scale(d.user, 40, 0.5), 'item_scale': frequency_scale(d.item, 30, 0.5)}
    g = jax.grad(lambda q: regularized_loss(q, batch, {'l2': 0.3, 'gram': 0.5})[0])(p)
    assert float(jnp.abs(g['items']).max()) < 1e-4 and float(jnp.abs(g['item_bias']).max()) < 1e-4
    # the recorded objective never increases (exact block minimisation)
    J = m.history.total_loss.to_numpy()
    assert np.all(np.diff(J) <= 1e-5 * J[:-1])


def test_gradient_loop_decreases_loss_and_matches_als_objective():
    d = toy(n=1500)
    m = fit_regularized(d, k=3, l2=0.3, gram=0.5, lr=0.05, steps=300, eval_every=50, progress=False)
    h = m.history
    assert h.total_loss.iloc[-1] < h.total_loss.iloc[0]
    a = fit_regularized_als(d, k=3, l2=0.3, gram=0.5, iters=20, progress=False)
    # ALS is an exact block minimiser: Adam should not find a clearly lower value of the same objective
    assert a.history.total_loss.iloc[-1] <= h.total_loss.iloc[-1] * 1.01
    assert {'omse', 'l2_loss', 'gr_loss', 'bias_loss', 'total_loss', 'train_rmse', 'lr', 'seconds'} <= set(h.columns)


def test_gramian_shrinks_unobserved_interactions():
    d = toy(n=800)
    a0 = fit_regularized_als(d, k=4, l2=0.05, gram=0.0, iters=8, progress=False)
    a1 = fit_regularized_als(d, k=4, l2=0.05, gram=5.0, iters=8, progress=False)
    g = lambda m: np.sum((m.U.T @ m.U) * (m.V.T @ m.V)) / (40 * 30)
    assert g(a1) < g(a0)


def test_callback_stops_and_minibatch_and_logistic():
    d = toy()
    m = fit_regularized(d, k=2, steps=100, eval_every=10, callback=lambda s, row: s >= 20, progress=False)
    assert m.history.step.max() == 20
    mb = fit_regularized(d, k=2, steps=20, batch_size=64, eval_every=10, progress=False)
    assert np.isfinite(mb.history.total_loss).all()
    y = Interactions(d.user, d.item, (d.rating >= 4).astype(np.float32), None, 40, 30)
    ml = fit_regularized(y, k=2, loss='logistic', steps=50, eval_every=25, val=y, progress=False)
    pr = p_sale(ml, d.user, d.item)
    assert ((pr > 0) & (pr < 1)).all() and np.allclose(ml.predict(d.user, d.item), pr)


def test_bad_arguments():
    d = toy()
    with pytest.raises(ValueError): fit_regularized_als(d, k=0)
    with pytest.raises(ValueError): fit_regularized_als(d, k=2, l2=-1.0)
    with pytest.raises(ValueError): fit_regularized_als(d, k=2, weights=np.ones(3))
    with pytest.raises(ValueError): fit_regularized(d, k=2, loss='hinge')
    with pytest.raises(ValueError): fit_regularized(d, k=2, optimizer='rmsprop')
    with pytest.raises(ValueError): fit_regularized(d, k=2, decay_pct=1.5)
    with pytest.raises(ValueError): fit_regularized(d, k=2, loss='logistic')          # ratings are not 0/1
    with pytest.raises(TypeError): fit_regularized_als(np.zeros((3, 3)), k=2)
    empty = Interactions(np.zeros(0, int), np.zeros(0, int), np.zeros(0, np.float32), None, 3, 3)
    with pytest.raises(ValueError): fit_regularized_als(empty, k=2)


@pytest.mark.parametrize('kw', [dict(), dict(gram=0.5, freq_alpha=0.5, weighted=True), dict(biased=False, gram=1.0, l2=0.0)])
def test_compiled_block_solver_matches_reference(kw):
    d = toy(n_users=45)                                  # users 40..44 have no ratings
    if kw.pop('weighted', False): kw['weights'] = wals_weights(d.user, d.item, 45, 30, 'user', 0.5)
    a = fit_regularized_als(d, k=3, iters=5, progress=False, backend='numpy', **kw)
    b = fit_regularized_als(d, k=3, iters=5, progress=False, backend='numba', **kw)
    assert np.abs(a.U - b.U).max() < 1e-4 and np.abs(a.V - b.V).max() < 1e-4
    assert b.history.total_loss.iloc[-1] == pytest.approx(a.history.total_loss.iloc[-1], rel=1e-5)


def test_warm_start_continues_the_fit_and_checks_shapes():
    d = toy()
    cold = fit_regularized_als(d, k=3, l2=0.3, iters=4, progress=False)
    warm = fit_regularized_als(d, k=3, l2=0.3, iters=4, init=cold, progress=False)
    long = fit_regularized_als(d, k=3, l2=0.3, iters=8, progress=False)
    assert warm.config['warm_start'] and not cold.config['warm_start']
    assert warm.history.total_loss.iloc[-1] == pytest.approx(long.history.total_loss.iloc[-1], rel=1e-4)
    with pytest.raises(ValueError): fit_regularized_als(d, k=4, init=cold, progress=False)
    with pytest.raises(TypeError): fit_regularized_als(d, k=3, init=(cold.U, cold.V), progress=False)
    with pytest.raises(ValueError): fit_regularized_als(d, k=3, backend='cuda', progress=False)


def test_one_blas_thread_limits_and_restores():
    from threadpoolctl import threadpool_info
    from thu_big_data_ml.mf import one_blas_thread
    before = {x['filepath']: x['num_threads'] for x in threadpool_info() if x['user_api'] == 'blas'}
    with one_blas_thread():
        assert all(x['num_threads'] == 1 for x in threadpool_info() if x['user_api'] == 'blas')
    after = {x['filepath']: x['num_threads'] for x in threadpool_info() if x['user_api'] == 'blas'}
    assert all(after[p] == n for p, n in before.items())


def test_regularizer_ablation_paths_and_reuse():
    from thu_big_data_ml.regularization import regularizer_ablation, gramian_effect
    tr, va = toy(n=1500, seed=1), toy(n=300, seed=2)
    tab, fits = regularizer_ablation(tr, va, 3, [0.1, 0.3], [1.0, 3.0], iters=6)
    assert list(tab.regularizer) == ['none', 'L2', 'Gramian', 'L2 + Gramian', 'L2 + WALS weights', 'L2, frequency-scaled']
    assert not fits['L2', 0.3].config['warm_start'] and fits['L2', 0.1].config['warm_start']
    assert all(len(m.history) <= 6 for m in fits.values())
    best = tab.set_index('regularizer').loc['L2', 'best strength']
    rows = gramian_effect(fits, tr, va)
    assert [r['Gramian'] for r in rows] == [0.0, 1.0, 3.0] and rows[0]['L2'] == best
    small, _ = regularizer_ablation(tr, va, 3, [0.1], [1.0], iters=3, paths=('L2', 'none'))
    assert list(small.regularizer) == ['L2', 'none']


@pytest.mark.parametrize('loss', ['mse', 'logistic'])
def test_dense_predictions_equal_gathered(loss):
    "The dense data term (U V^T read at the pairs) is a fast path of the gathered one: same loss, gradients and fit."
    d = toy(n=900)
    if loss == 'logistic': d = Interactions(d.user, d.item, (d.rating >= 4).astype(np.float32), None, 40, 30)
    rng = np.random.default_rng(3)
    p = {'users': jnp.asarray(rng.normal(size=(40, 3)), jnp.float32),
         'items': jnp.asarray(rng.normal(size=(30, 3)), jnp.float32),
         'user_bias': jnp.asarray(rng.normal(size=40), jnp.float32), 'item_bias': jnp.asarray(rng.normal(size=30), jnp.float32)}
    batch = {'user': d.user, 'item': d.item, 'rating': d.rating, 'weights': wals_weights(d.user, d.item, 40, 30), 'mu': 0.5}
    f = lambda dense: jax.value_and_grad(lambda q: regularized_loss(q, batch, {'l2': 0.2, 'gram': 0.3, 'loss': loss,
                                                                                'dense': dense})[0])(p)
    (a, ga), (b, gb) = f(False), f(True)
    assert float(a) == pytest.approx(float(b), rel=1e-5)
    for x in ga: assert np.allclose(ga[x], gb[x], rtol=1e-4, atol=1e-6)
    kw = dict(k=3, l2=0.2, gram=0.3, loss=loss, lr=0.05, steps=60, eval_every=20, progress=False)
    m0, m1 = fit_regularized(d, dense=False, **kw), fit_regularized(d, dense=True, **kw)
    assert not m0.config['dense'] and m1.config['dense']
    assert np.allclose(m0.history.total_loss, m1.history.total_loss, rtol=1e-4)
    assert np.abs(m0.U - m1.U).max() < 1e-3
    with pytest.raises(ValueError): fit_regularized(d, k=2, dense='yes', progress=False)


def test_scan_chunks_match_one_step_at_a_time():
    "Chunked steps (eval_every > 1) follow the same trajectory as evaluating after every step, minibatches included."
    d = toy(n=700)
    for bs in (None, 64):
        a = fit_regularized(d, k=3, steps=30, eval_every=1, batch_size=bs, progress=False)
        b = fit_regularized(d, k=3, steps=30, eval_every=7, batch_size=bs, progress=False)
        assert np.abs(a.U - b.U).max() < 1e-5
        assert np.allclose(a.history.set_index('step').loc[b.history.step, 'total_loss'], b.history.total_loss, rtol=1e-5)
