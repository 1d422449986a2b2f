"""The Spark path of the comparison chapter: pyspark.ml ALS on a tiny exactly low-rank problem, next to the in-process ALS.
Skipped, with the reason, when pyspark (optional extra) or a Java runtime is absent."""
import numpy as np
import pytest

from thu_big_data_ml.compare import spark_available

ok, why = spark_available()
pytestmark = pytest.mark.skipif(not ok, reason=f"Spark path skipped: {why}")


def tiny_low_rank(n_users=24, n_items=18, rank=2, seed=0):
    from thu_big_data_ml.data import Interactions
    rng = np.random.default_rng(seed)
    P, Q = rng.normal(0, 0.8, (n_users, rank)), rng.normal(0, 0.8, (n_items, rank))
    R = np.clip(3 + P @ Q.T, 1, 5)
    u, i = np.nonzero(np.ones_like(R))
    test = rng.random(len(u)) < 0.2
    mk = lambda m: Interactions(u[m], i[m], R[u[m], i[m]], None, n_users, n_items)
    return mk(~test), mk(test)


def test_spark_als_fits_a_low_rank_matrix_like_the_in_process_als():
    from thu_big_data_ml.compare import spark_als
    from thu_big_data_ml.data import Interactions
    from thu_big_data_ml.mf import fit_mf
    train, test = tiny_low_rank()
    # one extra test pair with a user index Spark never saw: coldStartStrategy='nan'
    n = train.n_users + 1
    train = Interactions(train.user, train.item, train.rating, None, n, train.n_items)
    test = Interactions(np.r_[test.user, n - 1], np.r_[test.item, 0], np.r_[test.rating, 3.0], None, n, test.n_items)
    r = spark_als(train, test, rank=3, reg=0.01, max_iter=6, master='local[2]')
    assert r['train_ratings'] == len(train)
    assert np.isnan(r['pred'][-1]) and np.isfinite(r['pred'][:-1]).all() and r['defined'] == len(test) - 1
    assert r['rmse'] < 0.25, r['rmse']
    ours = fit_mf(train, k=3, lam=0.01, method='als', max_iter=30, progress=False)
    ours_rmse = float(np.sqrt(np.mean((np.clip(ours.predict(test.user[:-1], test.item[:-1]), 1, 5) - test.rating[:-1]) ** 2)))
    assert abs(r['rmse'] - ours_rmse) < 0.15, (r['rmse'], ours_rmse)
    assert r['fit_s'] > 0 and r['predict_s'] > 0


def test_spark_session_names_bad_master():
    from thu_big_data_ml.compare import _local_cores
    assert _local_cores('local[2]') == 2 and _local_cores('spark://h:7077') is None
