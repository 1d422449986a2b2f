"""Hyperparameter studies too long for their chapters: chapter 05's nested CV on MovieLens 1M, and the book's HPO study.

`--part nested`: chapter 05's `selection.NESTED_PLAN` on MovieLens 100K (all five outer folds, to get the first 1M trial the
chapter enqueues) and then MovieLens 1M (all five outer folds); writes bench/results/selection_nested_1m.json, keyed by the
1M ratings, the plan, the enqueued start and the code of `selection` (and what it imports). Chapter 05 reads it with
`core.lookup_results` and otherwise runs outer fold 0 only.

`--part book`: section 05a's study (`book_hpo.BOOK_PLAN['full']`): the book's 8-dimensional space for gradient-descent MF
on MovieLens 100K, TPE and random search, objective the mean RMSE over inner folds of outer fold 0's training part (its
test piece is never used), the importances and the paired one-at-a-time checks of the book's claims; writes
bench/results/book_hpo.json (keyed by the ratings, the plan and the code of `book_hpo`). Both studies live in SQLite
under `core.runs_dir()` and resume when the bench is rerun.

Usage: python bench/bench_hpo.py [--part nested book]      (`make bench-hpo`; see the printed times)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from thu_big_data_ml.core import write_results                               # noqa: E402
from thu_big_data_ml.data import load_movielens                              # noqa: E402


def nested() -> None:
    from thu_big_data_ml.selection import NESTED_PLAN, nested_fingerprint, start_from, study_storage, tune_cv
    store = study_storage('selection', deps=['selection'])   # a code change starts new studies
    t0, c0 = time.perf_counter(), time.process_time()
    p = NESTED_PLAN['100k']
    tab100 = tune_cv(load_movielens('100k').train, 5, p['n_trials'], p['space'], p['fixed'], p['iters'], 0.1, 'tpe',
                     '100k-nested', store, seed=0, progress=True)
    p = NESTED_PLAN['1m']
    start = start_from(tab100, p['space'])
    train = load_movielens('1m').train
    tab = tune_cv(train, 5, p['n_trials'], p['space'], p['fixed'], p['iters'], 0.1, 'tpe', '1m-nested', store,
                  enqueue=start, seed=0, progress=True)
    tab.insert(0, 'dataset', '1m')
    payload = {'folds': tab.to_dict(orient='list'), 'start': start, 'wall_s': time.perf_counter() - t0,
               'cpu_s': time.process_time() - c0, 'load_average': os.getloadavg()[0]}
    out = write_results('selection_nested_1m', payload, fingerprint=nested_fingerprint(train, p, start),
                        deps=['selection'], command='python bench/bench_hpo.py --part nested')
    print(tab.round(4).to_string()); print(f"wrote {out} ({payload['wall_s']:.0f} s wall, {payload['cpu_s']:.0f} s CPU)")


def book() -> None:
    from thu_big_data_ml.book_hpo import BOOK_PLAN, book_fingerprint, run_book_study
    t0, c0 = time.perf_counter(), time.process_time()
    plan = BOOK_PLAN['full']
    train = load_movielens('100k').train
    res = run_book_study(train, plan, progress=True)
    payload = {**res, 'wall_s': time.perf_counter() - t0, 'cpu_s': time.process_time() - c0,
               'load_average': os.getloadavg()[0]}
    out = write_results('book_hpo', payload, fingerprint=book_fingerprint(train, plan), deps=['book_hpo'],
                        command='python bench/bench_hpo.py --part book')
    print(f"wrote {out} ({payload['wall_s']:.0f} s wall, {payload['cpu_s']:.0f} s CPU)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--part', nargs='+', choices=['nested', 'book'], default=['nested', 'book'])
    args = ap.parse_args()
    for part in args.part:
        {'nested': nested, 'book': book}[part]()


if __name__ == '__main__':
    main()
