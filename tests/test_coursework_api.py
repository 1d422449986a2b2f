"""The earlier coursework's public names (thu_big_data_ml.big_data_analytics.matrix_decomposition, thu_big_data_ml.help)
against the new implementations (cf, mf, metrics) and plain references, on small data; and the coursework's own cells,
copied from its notebook, run end to end on small course-format files."""
# ruff: noqa: F405, E501, B007, UP015, E401 -- the coursework's cells are copied as written (star import, long lines)
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from thu_big_data_ml.big_data_analytics import matrix_decomposition as md
from thu_big_data_ml.big_data_analytics.matrix_decomposition import *  # noqa: F403 (the coursework's import)
from thu_big_data_ml.cf import CosineCF, cosine_cf_reference
from thu_big_data_ml.data import COURSE_FILES, Interactions, NetflixShape, RatingData, generate_netflix_like
from thu_big_data_ml.metrics import evaluate, rmse
from thu_big_data_ml.mf import fit_mf


@pytest.fixture
def fresh_default():
    "No default data set before or after the test (the module keeps one, as the coursework's notebook kept globals)."
    md.set_default_data(None); yield; md.set_default_data(None)


def random_ratings(n_users=30, n_items=25, density=0.3, seed=0):
    rng = np.random.default_rng(seed)
    X = np.where(rng.random((n_users, n_items)) < density, rng.integers(1, 6, (n_users, n_items)), 0).astype(np.float64)
    X[0, :3] = [5, 4, 1]                      # no empty first row
    return X


def test_public_names_exist():
    names = ['get_rating_matrix', 'get_similarities', 'compute_weighted_sum_on_matrix', 'get_X_train_weighted',
             'ensure_tensor', 'masked_rmse_loss', 'MatrixFactorization', 'masked_mse_loss', 'jax_masked_mse_loss',
             'train_matrix_factorization', 'draw_metrics_df']
    ns = {}
    exec('from thu_big_data_ml.big_data_analytics.matrix_decomposition import *', ns)
    assert all(n in ns for n in names)


def test_get_rating_matrix_matches_interactions(fresh_default):
    rng = np.random.default_rng(1)
    users = np.array([7, 3, 99, 42]); movies = np.array([10, 2, 8, 5])
    pairs = [(u, m) for u in users for m in movies if rng.random() < 0.6]
    df = pd.DataFrame(pairs, columns=['user_id', 'movie_id']); df['rating'] = rng.integers(1, 6, len(df))
    su, sm = np.sort(users), np.sort(movies)
    inter = Interactions(np.searchsorted(su, df.user_id), np.searchsorted(sm, df.movie_id), df.rating, None, len(su), len(sm))
    md.set_default_data(RatingData('toy', 'generated', su, sm, inter))
    X = md.get_rating_matrix(df)                               # default maps: the default data's sorted ids
    assert (X != inter.csr()).nnz == 0 and X.shape == inter.shape and X.dtype == np.int64   # the ratings' dtype
    assert md.get_rating_matrix(df, dtype=np.float32).dtype == np.float32
    part = df[df.movie_id != 5]                                # a "test set" without one movie: the same column space
    assert md.get_rating_matrix(part).shape == X.shape
    u2r = {u: r for r, u in enumerate(users)}; m2c = {m: c for c, m in enumerate(movies)}
    Y = md.get_rating_matrix(df, u2r, m2c).toarray()
    for u, m, r in df.itertuples(index=False): assert Y[u2r[u], m2c[m]] == r
    assert Y.sum() == df.rating.sum()
    assert md.get_rating_matrix(df, u2r).shape == (4, 4)      # one map given, the other from the default data
    with pytest.raises(ValueError, match='not in the given map'):
        md.get_rating_matrix(df, {7: 0}, m2c)
    with pytest.raises(ValueError, match="not in the default data's users"):
        md.get_rating_matrix(pd.DataFrame({'user_id': [1], 'movie_id': [2], 'rating': [3]}))
    with pytest.raises(ValueError, match='duplicate'):
        md.get_rating_matrix(pd.concat([df, df.iloc[:1]]))
    with pytest.raises(ValueError, match='columns'):
        md.get_rating_matrix(df.drop(columns='rating'))
    with pytest.raises(TypeError, match='numeric'):
        md.get_rating_matrix(df.assign(rating=df.rating.astype(str)))


def test_defaults_read_the_default_data(fresh_default, tmp_path, monkeypatch):
    from sklearn.metrics.pairwise import cosine_similarity
    monkeypatch.setenv('THU_BDML_CACHE', str(tmp_path))      # the no-argument calls cache on disk, as the coursework's did
    X = random_ratings(seed=7)
    tr = Interactions(*np.nonzero(X), X[X != 0], None, *X.shape)
    md.set_default_data(RatingData('toy', 'generated', np.arange(1, 31), np.arange(1, 26), tr))
    S = md.get_similarities()
    assert S.dtype == np.float64
    np.testing.assert_allclose(S, cosine_similarity(X), atol=1e-12)
    np.testing.assert_array_equal(md.get_similarities(), S)   # again: from the cache
    Xn = np.where(X == 0, np.nan, X)
    W = md.get_X_train_weighted()
    np.testing.assert_allclose(W, md.compute_weighted_sum_on_matrix(S, Xn), equal_nan=True)
    np.testing.assert_allclose(md.get_X_train_weighted(cosine_sim=S), W, equal_nan=True)
    assert W.dtype == np.float64


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


def test_ensure_tensor_keeps_dtype_on_the_cpu():
    import torch
    t = md.ensure_tensor(np.arange(3))
    assert t.dtype == torch.int64 and t.device.type == 'cpu'
    assert md.ensure_tensor([1.5, 2.0]).dtype == torch.float64
    assert md.ensure_tensor(t, device=None) is t


_HELP_PROBE = r"""
import json, os, sys
import thu_big_data_ml.help as h
r = {'pyplot at import': 'matplotlib.pyplot' in sys.modules, 'made at import': os.listdir(os.environ['THU_BDML_DATA'])}
ns = {}; exec('from thu_big_data_ml.help import *', ns)
r['pyplot after star import'] = 'matplotlib.pyplot' in sys.modules
r['star names'] = sorted(k for k in ns if not k.startswith('__'))
from thu_big_data_ml.help import data_path, joblib_memory, plt
try: h.no_such_name; r['bad name'] = 'no error'
except AttributeError as e: r['bad name'] = str(e)
r.update(data_path=str(data_path), plt=plt.__name__, memory=joblib_memory.location, same=h.joblib_memory is joblib_memory)
print(json.dumps(r))
"""


def test_help_names_are_computed_when_read(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith('THU_BDML_')}
    env['THU_BDML_DATA'] = str(tmp_path)
    r = json.loads(subprocess.run([sys.executable, '-c', _HELP_PROBE], env=env, capture_output=True, text=True,
                                  check=True).stdout)
    assert r['pyplot at import'] is False and r['made at import'] == [] and r['pyplot after star import'] is False
    assert r['star names'] == sorted(['lib_init_path', 'lib_directory_path', 'lib_repo_path', 'data_path', 'runs_path',
                                      'joblib_memory'])
    assert r['data_path'] == str(tmp_path) and r['plt'] == 'matplotlib.pyplot' and r['same'] is True
    assert r['memory'] == str(tmp_path / 'cache') and 'no_such_name' in r['bad name']


@pytest.fixture
def course_folder(tmp_path, monkeypatch, fresh_default):
    """Small course files where the coursework kept them, `<data>/netflix/`, with `$THU_BDML_DATA` and the cache in
    `tmp_path`; `pd.read_csv` is restored afterwards (the coursework replaces it with a cached version)."""
    gen = generate_netflix_like(tmp_path / 'generated', NetflixShape().small(n_users=120, n_movies=150, n_titles=200,
                                                                             n_ratings=6000), progress=False)
    (tmp_path / 'data' / 'netflix').mkdir(parents=True)
    for f in COURSE_FILES: shutil.copy(gen / f, tmp_path / 'data' / 'netflix' / f)
    monkeypatch.setenv('THU_BDML_DATA', str(tmp_path / 'data'))
    monkeypatch.setenv('THU_BDML_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setattr(pd, 'read_csv', pd.read_csv)
    return tmp_path / 'data' / 'netflix'


def test_the_coursework_runs_unchanged(course_folder):
    """The coursework notebook's cells in its order (data -> similarities -> weighted sums -> RMSE -> MF training),
    copied as written; adapted: sizes (small files, fewer epochs), devices ('cuda' -> 'cpu'), and scholarly_infrastructure's
    `default_on_exception` written out. Each step is checked against the new modules."""
    import chardet
    import torch
    from copy import deepcopy
    from scipy.sparse import csr_matrix
    from sklearn.metrics.pairwise import cosine_similarity
    from tqdm import tqdm

    # 1. data
    from thu_big_data_ml.help import data_path
    download_path = data_path / "netflix"
    download_path.mkdir(exist_ok=True, parents=True)
    assert download_path == course_folder
    from thu_big_data_ml.help import joblib_memory
    pd.read_csv = pd.read_csv = joblib_memory.cache(pd.read_csv)
    users = pd.read_csv(download_path/'users.txt', header=None, names=['user_id'])
    train_data = pd.read_csv(download_path/'netflix_train.txt', sep=' ', header=None, names=['user_id', 'movie_id', 'rating', 'date'])
    test_data = pd.read_csv(download_path/'netflix_test.txt', sep=' ', header=None, names=['user_id', 'movie_id', 'rating', 'date'])
    with open(download_path / 'movie_titles.txt', 'rb') as f:
        rawdata = f.read()
    encoding = chardet.detect(rawdata)['encoding']
    with open(download_path / 'movie_titles.txt', 'r', encoding=encoding) as file:
        lines = file.readlines()
    def int_or_none(x):   # the coursework: default_on_exception(lambda x: int(x), default_value=None)
        try: return int(x)
        except Exception: return None
    movies = []
    for i, line in enumerate(lines):
        line = line.strip()
        if line=="":
            continue
        splits = line.split(',', 2)
        row_data = [int_or_none(splits[0]), int_or_none(splits[1]), splits[2]]
        movies.append(row_data)
    movies = pd.DataFrame(movies, columns=['movie_id', 'year', 'title'])
    sorted_users = users.sort_values('user_id')
    user_to_row = {user_id: idx for idx, user_id in enumerate(sorted_users['user_id'])}
    sorted_movies = movies.sort_values('movie_id')
    movie_to_col = {movie_id: idx for idx, movie_id in enumerate(sorted_movies['movie_id'])}
    movies_set = set(train_data['movie_id'].unique()) | set(test_data['movie_id'].unique())
    movie_to_col = {movie_id: idx for idx, movie_id in enumerate(movies_set)}
    X_train = get_rating_matrix(train_data)
    X_test = get_rating_matrix(test_data)
    X_train.shape, X_test.shape, type(X_train), X_train.dtype
    X_train_dense:np.array = X_train.toarray()
    X_test_dense:np.array = X_test.toarray()

    # ... the same matrices the coursework's own get_rating_matrix made from its globals (its columns in set order)
    def coursework_get_rating_matrix(data):
        rows = data['user_id'].map(user_to_row); cols = data['movie_id'].map(movie_to_col); values = data['rating']
        return csr_matrix((values, (rows, cols)), shape=(len(user_to_row), len(movie_to_col)))
    order = np.searchsorted(np.sort(list(movies_set)), list(movies_set))
    for ours, data in ((X_train, train_data), (X_test, test_data)):
        assert type(ours) is csr_matrix and ours.dtype == np.int64 and ours.shape == (len(user_to_row), len(movie_to_col))
        assert (ours[:, order] != coursework_get_rating_matrix(data)).nnz == 0
    assert X_train_dense.dtype == np.int64 and test_data['movie_id'].nunique() <= X_test.shape[1]

    # 2. similarities
    X_train_torch = torch.from_numpy(X_train_dense).float()          # the coursework: .to("cuda")
    cosine_sim = get_similarities()
    assert cosine_sim.shape == (len(users), len(users)) and type(cosine_sim) is np.ndarray and cosine_sim.dtype == np.float64
    np.testing.assert_allclose(cosine_sim, cosine_similarity(X_train), atol=1e-12)

    # 3. weighted sums
    X_train_dense = X_train_dense.astype(np.float64)
    X_train_dense_nan = deepcopy(X_train_dense)
    X_train_dense_nan[X_train_dense_nan==0] = np.nan
    X_train_weighted = get_X_train_weighted()
    weight_sum = cosine_sim.sum(axis=1)
    X_train_pred_wrong = (cosine_sim @ X_train_dense) / weight_sum[:, np.newaxis]
    mask = np.isnan(X_train_dense_nan)
    weight_sum_correct = cosine_sim@(1-mask)
    X_train_pred = (cosine_sim @ X_train_dense) / weight_sum_correct
    assert X_train_pred_wrong.max() < 5 and X_train_weighted.dtype == np.float64
    np.testing.assert_allclose(X_train_weighted, X_train_pred, rtol=1e-10, equal_nan=True)

    # 4. RMSE (the coursework's masked_rmse_loss cells) against metrics and cf.CosineCF
    test_rmse = masked_rmse_loss(ensure_tensor(X_train_pred), ensure_tensor(X_test_dense), verbose=True)
    train_rmse = masked_rmse_loss(ensure_tensor(X_train_pred), ensure_tensor(X_train_dense), verbose=True)
    data = md.default_data()
    assert data.source == 'course' and test_rmse.dtype == torch.float64
    u, i = data.test.user, data.test.item
    assert test_rmse.item() == pytest.approx(rmse(X_train_pred[u, i], data.test.rating), rel=1e-12)
    assert test_rmse.item() == pytest.approx(evaluate(CosineCF().fit(data.train), data.test)['rmse'], rel=1e-5)
    assert train_rmse.item() < test_rmse.item()

    # 5. MF: the model, the loss, the hand-written AdamW loop, then the trainer and its plot
    k = 50
    m, n = X_train_torch.shape
    model = MatrixFactorization(m, n, k)
    assert model().shape == (m, n)
    assert masked_mse_loss(model(), model()).item() == 0
    lmd = 1e-3
    lr = 1e-2
    model = MatrixFactorization(m, n, k).to('cpu')                  # the coursework: .to('cuda:2')
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=lmd)
    losses = []
    bar = tqdm(range(30))                                           # the coursework: range(100)
    for epoch in bar:
        optimizer.zero_grad()
        pred_matrix = model()
        loss = masked_mse_loss(pred_matrix, X_train_torch.to('cpu'))
        loss.backward()
        losses.append(loss.item())
        bar.set_postfix(loss=loss.item())
        optimizer.step()
    assert losses[-1] < losses[0]
    lr = 5e-3
    lmd = 0.01
    k = 50
    max_epochs = 20                                                  # the coursework: 100000
    required_delta_loss = 1e-6
    model, metrics = train_matrix_factorization(X_train_dense, X_test_dense, k=k, lmd=lmd, lr=lr, max_epochs=max_epochs, required_delta_loss=required_delta_loss)
    metrics_df = pd.DataFrame(metrics)
    fig = draw_metrics_df(metrics_df)
    assert isinstance(model, MatrixFactorization) and model().shape == (m, n)
    assert list(metrics_df.columns) == ['loss', 'train_rmse', 'test_rmse', 'delta_loss'] and len(metrics_df) == max_epochs + 1   # and the start
    assert metrics_df['loss'].iloc[-1] < metrics_df['loss'].iloc[0] and len(fig.data) == 4
    assert np.isfinite(evaluate(model, data.test)['rmse'])
