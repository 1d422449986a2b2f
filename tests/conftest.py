"""Shared test fixtures: a small synthetic low-rank rating problem with users and items that have no training rating."""
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest


@dataclass
class Ratings:
    "An `Interactions`-like container that keeps the dtypes it is given (float32 or float64 ratings), with days."
    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    day: np.ndarray | None
    n_users: int
    n_items: int

    def __len__(self) -> int: return len(self.user)
    @property
    def shape(self) -> tuple[int, int]: return (self.n_users, self.n_items)
    def subset(self, idx) -> 'Ratings':
        return Ratings(self.user[idx], self.item[idx], self.rating[idx], None if self.day is None else self.day[idx],
                       self.n_users, self.n_items)
    def with_ratings(self, rating) -> 'Ratings':
        return Ratings(self.user, self.item, rating, self.day, self.n_users, self.n_items)
    def dense(self) -> np.ndarray:
        X = np.zeros(self.shape, self.rating.dtype); X[self.user, self.item] = self.rating
        return X


def make_low_rank(n_users: int = 60, n_items: int = 40, n_train: int = 1500, n_test: int = 300, rank: int = 2,
                  noise: float = 0.3, n_cold: int = 3, seed: int = 0) -> SimpleNamespace:
    """Ratings 1..5 from mu + b_u + b_i + P Q^T + noise (rounded, clipped), `n_train` training and `n_test` test ratings
    on distinct pairs; the last `n_cold` users and items have no training rating (and no test rating: the test set
    measures accuracy on seen pairs; the conformance tests query the cold ones directly)."""
    rng = np.random.default_rng(seed)
    P, Q = rng.normal(0, 0.7, (n_users, rank)), rng.normal(0, 0.7, (n_items, rank))
    truth = 3.6 + rng.normal(0, 0.3, n_users)[:, None] + rng.normal(0, 0.3, n_items)[None, :] + P @ Q.T
    wu, wi = n_users - n_cold, n_items - n_cold
    pick = rng.choice(wu * wi, n_train + n_test, replace=False)
    u, i = pick // wi, pick % wi
    r = np.clip(np.round(truth[u, i] + rng.normal(0, noise, len(u))), 1, 5)
    day = 14_000 + rng.integers(0, 1_000, len(u))
    full = Ratings(u.astype(np.int64), i.astype(np.int64), r, day.astype(np.int64), n_users, n_items)
    train, test = full.subset(np.arange(n_train)), full.subset(np.arange(n_train, n_train + n_test))
    return SimpleNamespace(train=train, train32=train.with_ratings(train.rating.astype(np.float32)), test=test,
                           cold_users=np.arange(wu, n_users), cold_items=np.arange(wi, n_items),
                           warm_users=np.arange(wu), warm_items=np.arange(wi), truth=truth)


@pytest.fixture(scope='session')
def low_rank() -> SimpleNamespace:
    "60 users x 40 items, 1500 training and 300 test ratings, users 57-59 and items 37-39 without training ratings."
    return make_low_rank()


def random_distributions(rng, n, d, sparse_frac=0.3):
    "n random distributions over d outcomes, with some zeros (as in co-occurrence rows); shared by the latent tests."
    p = rng.dirichlet(np.full(d, 0.5), size=n)
    p[rng.random(p.shape) < sparse_frac] = 0
    p[np.arange(n), rng.integers(0, d, n)] += 1e-3
    return p / p.sum(1, keepdims=True)
