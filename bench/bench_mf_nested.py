"""Nested 5-fold CV of biased ALS on MovieLens 100K and 1M, the study of chapter 03 at full size.

The same call as the chapter, `mf.nested_cv_movielens`, with the chapter's report-mode grid and sweeps; writes
bench/results/mf_nested_<variant>.json with `core.write_results` (keyed by the ratings, the grid, the sweeps and the
code of `mf`). Chapter 03 reads them with `core.lookup_results` and otherwise runs fewer folds and says so.

Usage: python bench/bench_mf_nested.py [--variants 100k 1m]     (1M: about 5 minutes per fold on a loaded 2-core machine)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from thu_big_data_ml.core import data_fingerprint, write_results     # noqa: E402
from thu_big_data_ml.data import load_movielens                       # noqa: E402
from thu_big_data_ml.mf import nested_cv_movielens                    # noqa: E402

# chapter 03, report mode (ML_GRID, ML_SWEEPS): keep in step with the chapter, or the chapter will not use the file
ML_GRID = [(50, 0.03, 'count'), (50, 0.05, 'count'), (50, 0.08, 'count'), (50, 10.0, 'uniform')]
ML_SWEEPS = 15


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--variants', nargs='+', default=['100k', '1m'])
    args = ap.parse_args()
    for v in args.variants:
        t0, c0 = time.perf_counter(), time.process_time()
        folds = nested_cv_movielens(v, ML_GRID, 5, ML_SWEEPS)
        payload = {'folds': folds.to_dict(orient='list'), 'wall_s': time.perf_counter() - t0,
                   'cpu_s': time.process_time() - c0, 'load_average': os.getloadavg()[0]}
        out = write_results(f'mf_nested_{v}', payload, deps=['mf'],
                            fingerprint=data_fingerprint(load_movielens(v).train, ML_GRID, ML_SWEEPS),
                            command=f'python bench/bench_mf_nested.py --variants {v}')
        print(folds.round(4).to_string()); print(f"wrote {out} ({payload['wall_s']:.0f} s wall, {payload['cpu_s']:.0f} s CPU)")


if __name__ == '__main__':
    main()
