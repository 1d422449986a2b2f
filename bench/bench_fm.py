"""Bayesian FM (chapter 11, `thu_big_data_ml.fm`) on the shared MovieLens folds: RMSE, time per sweep, peak memory.

For each requested fold of `kfold_splits(len(ml.train), 5, seed=0)` the features are built from the fold's training
part only (the stricter protocol) and the sampler runs a fixed number of sweeps; the held-out fold is predicted every
post-burn-in sweep and scored once at the end (all-sample posterior mean, clipped to [1, 5] by `metrics.score`).
Nothing is selected on it. Reported per fold: RMSE, wall and CPU milliseconds per sweep, the machine's load average
(the lab's machines are shared: wall time depends on the load, CPU time much less), and the process's peak RSS.

Each fold runs in a fresh subprocess so that the peak RSS is that fold's alone.

Still to come (issue 14): `myfm` 0.4.0 on the same relation blocks, side by side (in a throwaway venv outside the
repo, e.g. /tmp/myfm-venv, never a project dependency), as bench_surprise.py does with Surprise.

Usage: .venv/bin/python bench/bench_fm.py [--data 100k|1m] [--folds 0 1 ...] [--features flipped] [--k 10]
                                          [--sweeps 512] [--burn-in 64] [--likelihood normal|probit]
Writes bench/results/bench_fm_<data>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from thu_big_data_ml.core import machine_info                       # noqa: E402
from thu_big_data_ml.data import kfold_splits, load_movielens       # noqa: E402
from thu_big_data_ml.fm import fit_bayes_fm, movielens_side        # noqa: E402
from thu_big_data_ml.metrics import score                           # noqa: E402

HERE = Path(__file__).resolve().parent
MYFM_FLIPPED = {'100k': 0.8772, '1m': 0.8220}     # issue 14: myfm 0.4.0, timeSVD++ flipped, shared folds (1m: fold 0)
TARGET = {'100k': 0.874, '1m': 0.819}


def one_fold(data: str, fold: int, features: str, k: int, sweeps: int, burn_in: int, likelihood: str) -> dict:
    "Fit one fold in this process and describe it (RMSE, time per sweep, peak RSS)."
    ml = load_movielens(data)
    side = movielens_side(ml) if any(t in features for t in ('genres', 'year', 'title', 'age', 'gender', 'occupation')) else None
    tr_idx, te_idx = kfold_splits(len(ml.train), 5, 0)[fold]
    tr, te = ml.train.subset(tr_idx), ml.train.subset(te_idx)
    t0 = time.perf_counter()
    m = fit_bayes_fm(tr, features, k=k, n_samples=sweeps, burn_in=burn_in, seed=fold, val=te, side=side,
                     likelihood=likelihood, progress=False)
    h = m.history
    return dict(fold=fold, rmse=score(m.val_prediction, te.rating)['rmse'], fit_seconds=time.perf_counter() - t0,
                sweep_ms=1000 * h.seconds.iloc[-1] / len(h), sweep_cpu_ms=1000 * h.cpu_seconds.iloc[-1] / len(h),
                peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                loadavg=os.getloadavg()[0], p=m.config['p'], nnz=m.config['nnz'])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', default='100k', choices=['100k', '1m'])
    ap.add_argument('--folds', type=int, nargs='+', default=[0])
    ap.add_argument('--features', default='flipped')
    ap.add_argument('--k', type=int, default=None, help='rank (default: 10 on 100k, 32 on 1m, as myFM)')
    ap.add_argument('--sweeps', type=int, default=None, help='default: 512 on 100k, 256 on 1m')
    ap.add_argument('--burn-in', type=int, default=None, help='default: sweeps // 8')
    ap.add_argument('--likelihood', default='normal', choices=['normal', 'probit'])
    ap.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    k = a.k or (10 if a.data == '100k' else 32)
    sweeps = a.sweeps or (512 if a.data == '100k' else 256)
    burn = a.burn_in if a.burn_in is not None else sweeps // 8
    if a.worker:
        print(json.dumps(one_fold(a.data, a.folds[0], a.features, k, sweeps, burn, a.likelihood)))
        return {}
    rows = []
    for f in a.folds:
        cmd = [sys.executable, __file__, '--worker', '--data', a.data, '--folds', str(f), '--features', a.features,
               '--k', str(k), '--sweeps', str(sweeps), '--burn-in', str(burn), '--likelihood', a.likelihood]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode: raise SystemExit(f"fold {f} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"fold {f}: RMSE {r['rmse']:.4f}  {r['sweep_ms']:.0f} ms/sweep wall, {r['sweep_cpu_ms']:.0f} ms CPU  "
              f"peak {r['peak_rss_mib']:.0f} MiB  load {r['loadavg']:.1f}", flush=True)
    mean = float(np.mean([r['rmse'] for r in rows]))
    res = dict(when=time.strftime('%Y-%m-%d %H:%M:%S'), data=a.data, features=a.features, k=k, sweeps=sweeps,
               burn_in=burn, likelihood=a.likelihood, folds=rows, mean_rmse=mean, target=TARGET[a.data],
               myfm_flipped=MYFM_FLIPPED[a.data], machine=machine_info(),
               note='shared machine: wall time depends on the load (loadavg per fold); CPU time is the steadier figure')
    print(f"mean RMSE over {len(rows)} fold(s): {mean:.4f} (target {TARGET[a.data]}, myFM flipped {MYFM_FLIPPED[a.data]})")
    (HERE / 'results').mkdir(exist_ok=True)
    path = HERE / 'results' / f'bench_fm_{a.data}.json'
    path.write_text(json.dumps(res, indent=1))
    print(f"wrote {path}")
    return res


if __name__ == '__main__':
    main()
