"""Worker for bench/bench_surprise.py: fits one Surprise algorithm on one fold and prints a JSON line.

Runs in a throwaway venv that has scikit-surprise (never a project dependency), so it imports only the standard
library, numpy and surprise (pandas when that venv has it; otherwise a minimal stand-in for `load_from_df`).

Usage: python _surprise_worker.py FOLD.npz {svd,svdpp} [--seed 0]
FOLD.npz holds train_user, train_item, train_rating, test_user, test_item, test_rating (the integer indices are the
raw ids, the same ones the project's side uses).
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import surprise
from surprise import SVD, SVDpp, Dataset, Reader

ALGOS = {'svd': SVD, 'svdpp': SVDpp}


class _Triples:
    "Enough of a DataFrame for `Dataset.load_from_df` (it only calls `itertuples(index=False)`)."
    def __init__(self, u, i, r): self.u, self.i, self.r = u, i, r
    def itertuples(self, index=False): return zip(self.u, self.i, self.r)


def frame(u: np.ndarray, i: np.ndarray, r: np.ndarray):
    u, i, r = u.astype(np.int64).tolist(), i.astype(np.int64).tolist(), r.astype(np.float64).tolist()
    try:
        import pandas as pd
        return pd.DataFrame({'user': u, 'item': i, 'rating': r})
    except ImportError:
        return _Triples(u, i, r)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument('fold')
    ap.add_argument('algo', choices=sorted(ALGOS))
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args(argv)
    z = np.load(a.fold)
    t0 = time.perf_counter()
    trainset = Dataset.load_from_df(frame(z['train_user'], z['train_item'], z['train_rating']),
                                    Reader(rating_scale=(1, 5))).build_full_trainset()
    build_s = time.perf_counter() - t0
    algo = ALGOS[a.algo](random_state=a.seed)              # default settings otherwise
    t0, c0 = time.perf_counter(), time.process_time()
    algo.fit(trainset)
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    tu, ti, tr = z['test_user'].astype(np.int64).tolist(), z['test_item'].astype(np.int64).tolist(), z['test_rating']
    t0 = time.perf_counter()
    est = np.fromiter((algo.predict(u, i).est for u, i in zip(tu, ti)), dtype=np.float64, count=len(tu))  # clipped to [1, 5]
    predict_s = time.perf_counter() - t0
    out = {'algo': type(algo).__name__, 'params': {k: getattr(algo, k) for k in ('n_factors', 'n_epochs', 'biased',
                                                                                  'lr_bu', 'reg_bu') if hasattr(algo, k)},
           'rmse': float(np.sqrt(np.mean((est - tr.astype(np.float64)) ** 2))), 'fit_s': fit_s, 'fit_cpu_s': fit_cpu,
           'predict_s': predict_s, 'build_trainset_s': build_s, 'n_train': int(len(z['train_rating'])),
           'n_test': int(len(tr)), 'surprise': surprise.__version__, 'numpy': np.__version__,
           'python': platform.python_version()}
    print(json.dumps(out))
    return out


if __name__ == '__main__':
    main()
