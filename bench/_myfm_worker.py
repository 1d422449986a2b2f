"""Worker for bench/bench_fm.py: fits `myfm` (Gibbs-sampled Bayesian FM) on one fold's relation blocks, saves its
predictions and prints a JSON line.

Runs in a throwaway venv that has myfm 0.4.0 (e.g. /tmp/myfm-venv; never a project dependency), so it imports only
the standard library, numpy, scipy and myfm. It receives exactly the relation blocks our sampler fitted (built by
`thu_big_data_ml.fm.RatingFeatures` from the fold's training part) and the same hyperprior groups (one per term), so
the two samplers see the same model; the parent scores both predictions with `metrics.score`.

Usage: python _myfm_worker.py FOLD.npz OUT.npy --sweeps 512 --burn-in 64 --k 10 [--seed 0] [--likelihood probit]
`--likelihood probit`: myfm's ordered probit (`MyFMOrderedProbit`) on the rating levels of the training fold; the
saved prediction is the expected rating under the posterior-mean class probabilities, as our sampler scores it.
FOLD.npz holds y (training ratings), group_shapes, n_blocks and, per block j and part in (train, test):
{part}_{j}_index, {part}_{j}_data, {part}_{j}_indices, {part}_{j}_indptr, {part}_{j}_shape.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np
import scipy.sparse as sp
import myfm
from myfm import RelationBlock


def blocks(z, part: str) -> list:
    out = []
    for j in range(int(z['n_blocks'])):
        X = sp.csr_matrix((z[f'{part}_{j}_data'], z[f'{part}_{j}_indices'], z[f'{part}_{j}_indptr']),
                          shape=tuple(z[f'{part}_{j}_shape']))
        out.append(RelationBlock(z[f'{part}_{j}_index'].astype(np.int64).tolist(), X))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument('fold'); ap.add_argument('out')
    ap.add_argument('--sweeps', type=int, required=True); ap.add_argument('--burn-in', type=int, required=True)
    ap.add_argument('--k', type=int, required=True); ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--likelihood', default='normal', choices=['normal', 'probit'])
    a = ap.parse_args(argv)
    z = np.load(a.fold)
    y = z['y'].astype(np.float64); tr, te = blocks(z, 'train'), blocks(z, 'test')
    n_test = len(z['test_0_index'])
    probit = a.likelihood == 'probit'
    levels = np.unique(y)
    if probit and (levels != np.round(levels)).any(): raise SystemExit('probit: ratings must be whole numbers')
    fm = (myfm.MyFMOrderedProbit if probit else myfm.MyFMRegressor)(rank=a.k, random_seed=a.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    fm.fit(sp.csr_matrix((len(y), 0)), np.searchsorted(levels, y) if probit else y, X_rel=tr, n_iter=a.sweeps,
           n_kept_samples=a.sweeps - a.burn_in, group_shapes=[int(g) for g in z['group_shapes']])
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    X0 = sp.csr_matrix((n_test, 0))                      # means over the kept (post-burn-in) samples
    pred = fm.predict_proba(X0, te, n_workers=1) @ levels if probit else fm.predict(X0, te, n_workers=1)
    predict_s = time.perf_counter() - t0
    np.save(a.out, np.asarray(pred, np.float64))
    out = dict(fit_s=fit_s, fit_cpu_s=fit_cpu, sweep_ms=1000 * fit_s / a.sweeps, sweep_cpu_ms=1000 * fit_cpu / a.sweeps,
               predict_s=predict_s, peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               likelihood=a.likelihood, myfm=myfm.__version__, numpy=np.__version__, python=platform.python_version())
    print(json.dumps(out))
    return out


if __name__ == '__main__':
    main()
