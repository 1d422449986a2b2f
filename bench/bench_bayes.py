"""Bayesian MF (chapter 10, `thu_big_data_ml.bayes`): the nested 5-fold CV of `bayes.NESTED_PLAN` at full size.

Runs `bayes.run_nested_plan` on MovieLens (default 1M, the study that does not fit the chapter's time budget) on the
shared folds, fold by fold, and writes `bench/results/bench_bayes_<data>.json` with `core.write_results`: the per-fold
table (choice, inner RMSEs, outer test RMSE of the posterior mean and of the MAP biased ALS, seconds, wall and CPU ms per
refit sweep), keyed by the data fingerprint `data_fingerprint(train, plan)` and the code digest of `bayes` (and the
modules it imports). Chapter 10 shows the file when both match; otherwise it runs fold 0 and says so.

With `--sweep-timing`, it also times the sampler alone on fold 0 (ms per sweep, wall and CPU, k of the plan's grid) for
the original recipe (float64) and the report's (float32), and adds them to the file.

Usage: .venv/bin/python bench/bench_bayes.py [--data 1m|100k] [--folds 0 1 2 3 4] [--sweep-timing]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from thu_big_data_ml.bayes import NESTED_PLAN, fit_bayes_mf, run_nested_plan   # noqa: E402
from thu_big_data_ml.core import data_fingerprint, write_results               # noqa: E402
from thu_big_data_ml.data import kfold_splits, load_movielens                   # noqa: E402


def sweep_timing(train, ks, n: int = 20) -> list[dict]:
    "ms per sweep of the sampler alone (fold 0's training part, no validation scoring), float64 and float32."
    tr = train.subset(kfold_splits(len(train), 5, 0)[0][0])
    out = []
    for k in ks:
        for dtype in ('float64', 'float32'):
            fit_bayes_mf(tr, k=k, n_samples=2, burn_in=1, dtype=dtype, progress=False)          # compile
            t0, c0 = time.perf_counter(), time.process_time()
            fit_bayes_mf(tr, k=k, n_samples=n, burn_in=1, dtype=dtype, progress=False)
            out.append(dict(k=k, dtype=dtype, wall_ms=1000 * (time.perf_counter() - t0) / n,
                            cpu_ms=1000 * (time.process_time() - c0) / n, loadavg=os.getloadavg()[0]))
            print(f"k={k} {dtype}: {out[-1]['wall_ms']:.0f} ms/sweep wall, {out[-1]['cpu_ms']:.0f} ms CPU "
                  f"(load {out[-1]['loadavg']:.1f})", flush=True)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', default='1m', choices=sorted(NESTED_PLAN))
    ap.add_argument('--folds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    ap.add_argument('--sweep-timing', action='store_true')
    a = ap.parse_args(argv)
    ml = load_movielens(a.data)
    plan = NESTED_PLAN[a.data]
    rows, t_all = [], time.perf_counter()
    for f in a.folds:
        t0, c0 = time.perf_counter(), time.process_time()
        tab = run_nested_plan(ml.train, plan, [f])
        tab['fold_wall_s'], tab['fold_cpu_s'], tab['loadavg'] = (time.perf_counter() - t0, time.process_time() - c0,
                                                                 os.getloadavg()[0])
        rows.append(tab)
        r = tab.iloc[0]
        print(f"fold {f}: Bayesian MF {r.test_rmse:.4f} (k={r.k}), MAP ALS {r['MAP test_rmse']:.4f}; "
              f"{r.fold_wall_s:.0f} s wall, {r.fold_cpu_s:.0f} s CPU, refit {r.sweep_ms:.0f} ms/sweep, load {r.loadavg:.1f}",
              flush=True)
    tab = pd.concat(rows, ignore_index=True)
    payload = dict(data=a.data, plan=plan, folds=tab, mean_test_rmse=float(tab.test_rmse.mean()),
                   mean_map_rmse=float(tab['MAP test_rmse'].mean()), wall_seconds=time.perf_counter() - t_all)
    if a.sweep_timing: payload['sweep_timing'] = sweep_timing(ml.train, sorted({g['k'] for g in plan['grid']}))
    cmd = 'make bench-bayes' if a.data == '1m' and a.folds == [0, 1, 2, 3, 4] else \
        f"python bench/bench_bayes.py --data {a.data} --folds {' '.join(map(str, a.folds))}"
    out = write_results(f'bench_bayes_{a.data}', payload, fingerprint=data_fingerprint(ml.train, plan), deps=['bayes'],
                        command=cmd)
    print(f"{len(tab)} folds: Bayesian MF {payload['mean_test_rmse']:.4f}, MAP ALS {payload['mean_map_rmse']:.4f}; "
          f"wrote {out.name}")
    return payload


if __name__ == '__main__':
    main()
