"""Full-size regularizer ablation of chapter 04 on MovieLens 1M (the chapter runs a reduced 1M plan without it).

The same call as the chapter, `regularization.regularizer_ablation`, on the chapter's split (`holdout_split(n, 0.1,
seed=0)` of the ratings), k=64, at most 12 ALS sweeps a fit (warm starts along each path), the chapter's 1M grids; and
`gramian_effect` of its fits. Writes bench/results/regularization_ablation_1m.json with `core.write_results` (keyed by
the data fingerprint and the code of `regularization`); chapter 04 reads it with `core.lookup_results`.

Usage: python bench/bench_regularization.py      (about 10 minutes on a 2-core machine)
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from thu_big_data_ml.core import data_fingerprint, write_results     # noqa: E402
from thu_big_data_ml.data import holdout_split, load_movielens        # noqa: E402
from thu_big_data_ml.regularization import gramian_effect, regularizer_ablation  # noqa: E402

K, ITERS = 64, 12                                  # chapter 04, report mode
L2_GRID, GR_GRID = [0.05, 0.1, 0.2], [0.3, 1.0, 3.0]   # chapter 04's GRIDS['1m']


def main() -> None:
    d = load_movielens('1m')
    tr, va = holdout_split(len(d.train), 0.1, seed=0)
    tr, va = d.train.subset(tr), d.train.subset(va)
    t0, c0 = time.perf_counter(), time.process_time()
    tab, fits = regularizer_ablation(tr, va, K, L2_GRID, GR_GRID, ITERS, progress=True)
    gram = gramian_effect(fits, tr, va)
    payload = {'ablation': tab.to_dict(orient='list'), 'gramian': gram, 'wall_s': time.perf_counter() - t0,
               'cpu_s': time.process_time() - c0, 'load_average': os.getloadavg()[0]}
    out = write_results('regularization_ablation_1m', payload, deps=['regularization'],
                        fingerprint=data_fingerprint(tr, va, K, ITERS, L2_GRID, GR_GRID),
                        command='python bench/bench_regularization.py')
    print(tab.round(4).to_string()); print(f"wrote {out} ({payload['wall_s']:.0f} s wall, {payload['cpu_s']:.0f} s CPU)")


if __name__ == '__main__':
    main()
