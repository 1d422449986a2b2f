"""The earlier coursework's public names (thu_big_data_ml.big_data_analytics.matrix_decomposition) against the new
implementations (cf, mf) and plain references, on small random data."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from thu_big_data_ml.big_data_analytics import matrix_decomposition as md
from thu_big_data_ml.cf import CosineCF, cosine_cf_reference
from thu_big_data_ml.data import Interactions
from thu_big_data_ml.mf import fit_mf


def random_ratings(n_users=30, n_items=25, density=0.3, seed=0):
    rng = np.random.default_rng(seed)
    X = np.where(rng.random((n_users, n_items)) < density, rng.integers(1, 6, (n_users, n_items)), 0).astype(np.float64)
    X[0, :3] = [5, 4, 1]                      # no empty first row
    return X


def test_public_names_exist():
    names = ['get_rating_matrix', 'get_similarities', 'compute_weighted_sum_on_matrix', 'masked_rmse_loss',
             'MatrixFactorization', 'masked_mse_loss', 'jax_masked_mse_loss', 'train_matrix_factorization', 'draw_metrics_df']
    ns = {}
    exec('from thu_big_data_ml.big_data_analytics.matrix_decomposition import *', ns)
    assert all(n in ns for n in names)


def test_get_rating_matrix_matches_interactions():
    rng = np.random.default_rng(1)
    users = np.array([7, 3, 99, 42]); movies = np.array([10, 2, 8])
    pairs = [(u, m) for u in users for m in movies if rng.random() < 0.6]
    df = pd.DataFrame(pairs, columns=['user_id', 'movie_id']); df['rating'] = rng.integers(1, 6, len(df))
    X = md.get_rating_matrix(df)                               # default maps: sorted distinct ids
    su, sm = np.unique(df.user_id), np.unique(df.movie_id)
    inter = Interactions(np.searchsorted(su, df.user_id), np.searchsorted(sm, df.movie_id), df.rating, None, len(su), len(sm))
    assert (X != inter.csr()).nnz == 0 and X.shape == inter.shape
    u2r = {u: r for r, u in enumerate(users)}; m2c = {m: c for c, m in enumerate(movies)}
    Y = md.get_rating_matrix(df, u2r, m2c).toarray()
    for u, m, r in df.itertuples(index=False): assert Y[u2r[u], m2c[m]] == r
    assert Y.sum() == df.rating.sum()
    with pytest.raises(ValueError, match='not in the given map'):
        md.get_rating_matrix(df, {7: 0}, m2c)
    with pytest.raises(ValueError, match='duplicate'):
        md.get_rating_matrix(pd.concat([df, df.iloc[:1]]))
    with pytest.raises(ValueError, match='columns'):
        md.get_rating_matrix(df.drop(columns='rating'))


def test_get_similarities_matches_sklearn():
    from sklearn.metrics.pairwise import cosine_similarity
    X = random_ratings(seed=2); X[5] = 0                      # an empty row
    S = md.get_similarities(sp.csr_matrix(X))
    np.testing.assert_allclose(S, cosine_similarity(X), atol=1e-10)
    np.testing.assert_allclose(md.get_similarities(X), S)


def test_weighted_sum_matches_the_original_loop_and_cf():
    X = random_ratings(seed=3)
    S = md.get_similarities(X)
    Xnan = np.where(X == 0, np.nan, X)
    # the original's loop: for each row, nansum(X * w) / nansum(w) with w masked where X is NaN
    ref = np.empty_like(X)
    for i in range(len(X)):
        w = np.where(np.isnan(Xnan), np.nan, S[i][:, None])
        with np.errstate(invalid='ignore', divide='ignore'):
            ref[i] = np.nansum(Xnan * w, axis=0) / np.nansum(w, axis=0)
    out = md.compute_weighted_sum_on_matrix(S, Xnan, chunk=7)
    fin = np.isfinite(ref)
    np.testing.assert_allclose(out[fin], ref[fin], rtol=1e-10)
    # with the diagonal zeroed it is the assignment's CF: cf.cosine_cf_reference and cf.CosineCF agree
    S0 = S.copy(); np.fill_diagonal(S0, 0)
    P = md.compute_weighted_sum_on_matrix(S0, Xnan)
    u, i = np.nonzero(np.ones_like(X))
    np.testing.assert_allclose(P[u, i], cosine_cf_reference(X, np.c_[u, i]), rtol=1e-10, equal_nan=True)
    tr = Interactions(*np.nonzero(X), X[X != 0], None, *X.shape)
    np.testing.assert_allclose(P[u, i], CosineCF(dtype=np.float64).fit(tr).predict_raw(u, i), rtol=1e-8, equal_nan=True)
    with pytest.raises(ValueError): md.compute_weighted_sum_on_matrix(S[:3], Xnan)


def test_losses_torch_numpy_jax_agree():
    import jax, torch
    X = random_ratings(seed=4); R = np.random.default_rng(0).normal(3, 1, X.shape)
    known = X != 0
    want = np.sqrt(np.mean((R[known] - X[known]) ** 2))
    assert md.masked_rmse_loss(R, X).item() == pytest.approx(want, rel=1e-12)
    assert md.masked_rmse_loss(torch.tensor(R), torch.tensor(X), do_ensure_tensor=False).item() == pytest.approx(want, rel=1e-12)
    t = md.masked_mse_loss(torch.tensor(R), torch.tensor(X)).item()
    assert t == pytest.approx(0.5 * want ** 2, rel=1e-12)
    j = float(jax.jit(md.jax_masked_mse_loss)(R.astype(np.float32), X.astype(np.float32)))
    assert j == pytest.approx(t, rel=1e-5)
    g = jax.grad(md.jax_masked_mse_loss)(R.astype(np.float32), X.astype(np.float32))
    assert np.all(np.asarray(g)[~known] == 0) and np.any(np.asarray(g)[known] != 0)
    with pytest.raises(ValueError): md.masked_rmse_loss(R, np.zeros_like(X))
    with pytest.raises(ValueError): md.masked_mse_loss(torch.zeros(2, 3), torch.ones(3, 2))


def test_matrix_factorization_module():
    import torch
    m = md.MatrixFactorization(6, 5, 3, seed=1)
    assert m().shape == (6, 5) and m.U.device.type == 'cpu'
    assert torch.equal(m.U, md.MatrixFactorization(6, 5, 3, seed=1).U)
    mm = m.to_mf_model()
    u, i = np.array([0, 5, 2]), np.array([4, 0, 1])
    np.testing.assert_allclose(mm.predict(u, i), m().detach().numpy()[u, i], rtol=1e-5)
    back = md.MatrixFactorization.from_mf_model(mm)
    assert torch.allclose(back(), m())
    with pytest.raises(ValueError): md.MatrixFactorization(0, 5, 3)
    # the lab's prediction protocol: u.v at index pairs, bad ids raise, unseen users / items get the training mean
    np.testing.assert_allclose(m.predict(u, i), m().detach().numpy()[u, i], rtol=1e-5)
    m.user_count, m.item_count, m.train_mean = np.r_[0, np.ones(5, int)], np.r_[np.ones(4, int), 0], 3.5
    p = m.predict(np.array([0, 1, 1]), np.array([1, 4, 2]))
    assert p[0] == p[1] == 3.5 and p[2] == pytest.approx(m().detach().numpy()[1, 2], rel=1e-5)
    assert m.info_ == {'pairs': 3, 'unseen_user': 1, 'unseen_item': 1, 'fallback': 2}
    for bad in ((np.array([6]), np.array([0])), (np.array([-1]), np.array([0])), (np.array([0, 1]), np.array([0]))):
        with pytest.raises(ValueError): m.predict(*bad)
    with pytest.raises(TypeError): m.predict(np.array([0.0]), np.array([0]))
    assert m.to_mf_model().predict(np.array([0]), np.array([1]))[0] == pytest.approx(3.5)


def test_train_matrix_factorization_is_fit_mf_adam():
    X = random_ratings(seed=5); Xte = np.where(X == 0, random_ratings(seed=6), 0)
    model, metrics = md.train_matrix_factorization(X, Xte, k=4, lmd=0.1, lr=0.05, max_epochs=40, required_delta_loss=0.0,
                                                   random_state=3, backend='numba', progress=False)
    tr = md.dense_to_interactions(X); te = md.dense_to_interactions(Xte)
    ref = fit_mf(tr, k=4, lam=0.1, method='adam', backend='numba', lr=0.05, max_iter=40, val=te, seed=3, tol=0.0,
                 progress=False)
    np.testing.assert_allclose(model.U.detach().numpy(), ref.U, rtol=1e-6)
    np.testing.assert_allclose([m['loss'] for m in metrics], ref.history['J'] / len(tr), rtol=1e-9)
    np.testing.assert_allclose([m['test_rmse'] for m in metrics], ref.history['val_rmse'], rtol=1e-9)
    assert metrics[-1]['loss'] < metrics[0]['loss']
    # the stopping rule: per-rating loss change below required_delta_loss
    _, short = md.train_matrix_factorization(X, None, k=4, lmd=0.1, lr=0.05, max_epochs=500, required_delta_loss=1e-3,
                                            backend='numba', progress=False)
    assert len(short) < 501 and short[-1]['delta_loss'] < 1e-3 and np.isnan(short[-1]['test_rmse'])
    # the default torch backend reaches the same place
    mt, met_t = md.train_matrix_factorization(X, Xte, k=4, lmd=0.1, lr=0.05, max_epochs=40, required_delta_loss=0.0,
                                              random_state=3, progress=False)
    assert met_t[-1]['loss'] == pytest.approx(metrics[-1]['loss'], rel=1e-3)


def test_draw_metrics_df():
    df = pd.DataFrame({'loss': [3, 2, 1.5], 'train_rmse': [1.2, 1.0, 0.9], 'test_rmse': [1.3, 1.1, 1.0], 'delta_loss': [np.nan, 1, .5]})
    fig = md.draw_metrics_df(df, 'x')
    assert [t.name for t in fig.data] == ['Loss', 'Delta loss', 'Train RMSE', 'Test RMSE']
    assert fig.layout.title.text == 'x'
    with pytest.raises(ValueError): md.draw_metrics_df(pd.DataFrame({'a': [1]}))
