"""Bayesian FM (chapter 11, `thu_big_data_ml.fm`) on the shared MovieLens folds: RMSE, time per sweep, peak memory.

For each requested fold of `kfold_splits(len(ml.train), 5, seed=0)` the features are built from the fold's training
part only (the stricter protocol) and the sampler runs a fixed number of sweeps; the held-out fold is predicted every
post-burn-in sweep and scored once at the end (all-sample posterior mean, clipped to [1, 5] by `metrics.score`).
Nothing is selected on it. Reported per fold: RMSE, wall and CPU milliseconds per sweep, the machine's load average
(the lab's machines are shared: wall time depends on the load, CPU time much less), and the process's peak RSS.

Each fold runs in a fresh subprocess so that the peak RSS is that fold's alone.

With `--myfm PYTHON` (default: $MYFM_PYTHON, else /tmp/myfm-venv/bin/python when it exists; `--myfm none` skips it),
`myfm` 0.4.0 runs right after each of our folds on exactly the relation blocks our sampler fitted, with the same
hyperprior groups (one per term), rank, sweeps and burn-in (bench/_myfm_worker.py, in a throwaway venv outside the
repo, never a project dependency, as bench_surprise.py does with Surprise). Both predictions are scored here by
`metrics.score`. myfm has no ordered probit: with `--likelihood probit` it runs the Gaussian output on the same blocks.

Usage: .venv/bin/python bench/bench_fm.py [--data 100k|1m] [--folds 0 1 ...] [--features flipped] [--k 10]
                                          [--sweeps 512] [--burn-in 64] [--likelihood normal|probit] [--myfm PYTHON]
Writes bench/results/bench_fm_<data>.json (with `code`: the `code_digest('fm')` it ran, so a reader can tell
whether the results belong to the current code).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from thu_big_data_ml.core import code_digest, machine_info          # noqa: E402
from thu_big_data_ml.data import kfold_splits, load_movielens       # noqa: E402
from thu_big_data_ml.fm import fit_bayes_fm, movielens_side        # noqa: E402
from thu_big_data_ml.metrics import score                           # noqa: E402

HERE = Path(__file__).resolve().parent
WORKER = HERE / '_myfm_worker.py'
DEFAULT_MYFM = os.environ.get('MYFM_PYTHON') or '/tmp/myfm-venv/bin/python'
MYFM_FLIPPED = {'100k': 0.8772, '1m': 0.8220}     # issue 14: myfm 0.4.0, timeSVD++ flipped, shared folds (1m: fold 0)
TARGET = {'100k': 0.874, '1m': 0.819}


def dump_blocks(path: str, feats, tr, te) -> None:
    "The fold's training and test relation blocks, the training ratings and the term widths (hyperprior groups), for myfm."
    parts = {'train': feats.blocks(tr.user, tr.item, getattr(tr, 'day', None)),
             'test': feats.blocks(te.user, te.item, getattr(te, 'day', None))}
    z = dict(y=np.asarray(tr.rating, np.float64), n_blocks=len(parts['train']),
             group_shapes=np.array([w for b in parts['train'] for _, w in b.terms], np.int64))
    for part, bl in parts.items():
        for j, b in enumerate(bl):
            X = b.X.tocsr()
            z.update({f'{part}_{j}_index': np.asarray(b.index, np.int64), f'{part}_{j}_data': X.data,
                      f'{part}_{j}_indices': X.indices, f'{part}_{j}_indptr': X.indptr,
                      f'{part}_{j}_shape': np.array(X.shape)})
    np.savez(path, **z)


def one_fold(data: str, fold: int, features: str, k: int, sweeps: int, burn_in: int, likelihood: str,
             dump: str | None = None) -> dict:
    "Fit one fold in this process and describe it (RMSE, time per sweep, peak RSS); `dump`: save its blocks for myfm."
    ml = load_movielens(data)
    side = movielens_side(ml) if any(t in features for t in ('genres', 'year', 'title', 'age', 'gender', 'occupation')) else None
    tr_idx, te_idx = kfold_splits(len(ml.train), 5, 0)[fold]
    tr, te = ml.train.subset(tr_idx), ml.train.subset(te_idx)
    t0 = time.perf_counter()
    m = fit_bayes_fm(tr, features, k=k, n_samples=sweeps, burn_in=burn_in, seed=fold, val=te, side=side,
                     likelihood=likelihood, progress=False)
    h = m.history
    if dump: dump_blocks(dump, m.features, tr, te)
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
    ap.add_argument('--myfm', default=DEFAULT_MYFM, help="python of a venv with myfm 0.4.0, or 'none'")
    ap.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    ap.add_argument('--dump', default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    k = a.k or (10 if a.data == '100k' else 32)
    sweeps = a.sweeps or (512 if a.data == '100k' else 256)
    burn = a.burn_in if a.burn_in is not None else sweeps // 8
    if a.worker:
        print(json.dumps(one_fold(a.data, a.folds[0], a.features, k, sweeps, burn, a.likelihood, a.dump)))
        return {}
    py = None if a.myfm == 'none' else a.myfm
    if py and not (Path(py).exists() and subprocess.run([py, '-c', 'import myfm'], capture_output=True).returncode == 0):
        print(f"no myfm at {py}: our sampler only (make a venv with: python3.11 -m venv /tmp/myfm-venv && "
              "/tmp/myfm-venv/bin/pip install myfm==0.4.0)", flush=True)
        py = None
    ml = load_movielens(a.data) if py else None
    rows = []
    for f in a.folds:
        with tempfile.TemporaryDirectory(prefix='bench_fm_') as d:
            dump = str(Path(d) / 'fold.npz')
            cmd = [sys.executable, __file__, '--worker', '--data', a.data, '--folds', str(f), '--features', a.features,
                   '--k', str(k), '--sweeps', str(sweeps), '--burn-in', str(burn), '--likelihood', a.likelihood]
            out = subprocess.run(cmd + (['--dump', dump] if py else []), capture_output=True, text=True)
            if out.returncode: raise SystemExit(f"fold {f} failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"fold {f}: RMSE {r['rmse']:.4f}  {r['sweep_ms']:.0f} ms/sweep wall, {r['sweep_cpu_ms']:.0f} ms CPU  "
                  f"peak {r['peak_rss_mib']:.0f} MiB  load {r['loadavg']:.1f}", flush=True)
            if py:
                la = os.getloadavg()[0]
                out = subprocess.run([py, str(WORKER), dump, str(Path(d) / 'pred.npy'), '--sweeps', str(sweeps),
                                      '--burn-in', str(burn), '--k', str(k), '--seed', str(f)], capture_output=True, text=True)
                if out.returncode: raise SystemExit(f"myfm fold {f} failed:\n{out.stderr[-3000:]}")
                mr = json.loads(out.stdout.strip().splitlines()[-1])
                te = ml.train.subset(kfold_splits(len(ml.train), 5, 0)[f][1])
                mr.update(rmse=score(np.load(Path(d) / 'pred.npy'), te.rating)['rmse'], loadavg=la)
                r['myfm'] = mr
                print(f"   myfm: RMSE {mr['rmse']:.4f}  {mr['sweep_ms']:.0f} ms/sweep wall, {mr['sweep_cpu_ms']:.0f} ms CPU  "
                      f"peak {mr['peak_rss_mib']:.0f} MiB  load {la:.1f}  (ours/myfm CPU per sweep: "
                      f"{r['sweep_cpu_ms'] / mr['sweep_cpu_ms']:.2f})", flush=True)
    mean = float(np.mean([r['rmse'] for r in rows]))
    res = dict(when=time.strftime('%Y-%m-%d %H:%M:%S'), data=a.data, features=a.features, k=k, sweeps=sweeps,
               burn_in=burn, likelihood=a.likelihood, folds=rows, mean_rmse=mean, target=TARGET[a.data],
               myfm_flipped=MYFM_FLIPPED[a.data], machine=machine_info(), code=code_digest('fm'),
               note='shared machine: wall time depends on the load (loadavg per fold); CPU time is the steadier figure')
    if py:
        res['myfm_mean_rmse'] = float(np.mean([r['myfm']['rmse'] for r in rows]))
        res['cpu_per_sweep_ratio_ours_over_myfm'] = float(np.mean([r['sweep_cpu_ms'] / r['myfm']['sweep_cpu_ms'] for r in rows]))
        res['myfm_note'] = ('myfm 0.4.0 on the same relation blocks, hyperprior groups, rank, sweeps and burn-in; '
                            'Gaussian output (myfm has no ordered probit)')
        print(f"myfm mean RMSE {res['myfm_mean_rmse']:.4f}; ours/myfm CPU per sweep {res['cpu_per_sweep_ratio_ours_over_myfm']:.2f}")
    print(f"mean RMSE over {len(rows)} fold(s): {mean:.4f} (target {TARGET[a.data]}, myFM flipped {MYFM_FLIPPED[a.data]})")
    (HERE / 'results').mkdir(exist_ok=True)
    path = HERE / 'results' / f'bench_fm_{a.data}.json'
    path.write_text(json.dumps(res, indent=1))
    print(f"wrote {path}")
    return res


if __name__ == '__main__':
    main()
