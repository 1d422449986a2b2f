"""Chapter 12's user-based CF where the exact model cannot go: `lowrank_cf.LowRankUserCF` (rank-r cosine embedding,
top-k neighbours, similarities only at the probe pairs) on the Prize-layout data of `bench_prize.py` (run it first:
it generates data/prize_generated/<n>/). At sizes where the exact `NeighbourCF(kind='user', k=k)` fits in memory
(dense users x users float32 under --exact-gb), it runs too, with several ranks, so the approximation's cost is
measured. Writes bench/results/prize_user_cf.json.

    python bench/bench_user_cf.py --sizes 1000000 10000000
    make bench-user-cf                    # 1M (exact and ranks 16..256), 10M, 30M, 100M (rank 64)
"""
import argparse
import sys
import time

import numpy as np
import pandas as pd

from thu_big_data_ml.compare import PeakMemory
from thu_big_data_ml.core import write_results
from thu_big_data_ml.prize import BENCH_SIZES, load_prize, prize_fingerprint, prize_folder

DEPS = ('lowrank_cf', 'cf', 'prize')


def _row(data, model, label: str, rank) -> dict:
    "Fit and probe prediction of one model: wall and CPU seconds, peak memory above the loaded data, probe RMSE."
    from thu_big_data_ml.metrics import evaluate
    c0 = time.process_time()
    with PeakMemory() as pm:
        t0 = time.perf_counter(); model.fit(data.train); fit_s = time.perf_counter() - t0
        rmse = evaluate(model, data.test)['rmse']
    ni = np.bincount(data.train.item, minlength=data.n_items).astype(np.float64)
    mi = np.bincount(data.test.item, minlength=data.n_items).astype(np.float64)
    return dict(method=label, rank=rank, k=model.k, n_ratings=len(data.train) + len(data.test), n_users=data.n_users,
                n_items=data.n_items, train_ratings=len(data.train), probe=len(data.test), fit_s=fit_s,
                predict_s=pm.seconds - fit_s, wall_s=pm.seconds, cpu_s=time.process_time() - c0,
                peak_mb=pm.peak_bytes / 2**20, probe_rmse=rmse, similarities=float((ni * mi).sum()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--sizes', type=int, nargs='+', default=list(BENCH_SIZES), help='ratings per size')
    ap.add_argument('--k', type=int, default=50, help='neighbours per prediction')
    ap.add_argument('--rank', type=int, default=64, help='embedding rank at every size')
    ap.add_argument('--ranks', type=int, nargs='+', default=[16, 64, 256], help='ranks where the exact model fits')
    ap.add_argument('--exact-gb', type=float, default=2.0, help='run the exact model when its matrix is under this')
    a = ap.parse_args(argv)
    from thu_big_data_ml.cf import NeighbourCF
    from thu_big_data_ml.lowrank_cf import LowRankUserCF
    rows = []
    for n in a.sizes:
        folder = prize_folder(n)
        if not (folder / 'probe.txt').exists(): sys.exit(f'{folder}: no generated data; run bench/bench_prize.py first')
        data = load_prize(folder)
        LowRankUserCF(rank=8, k=a.k).fit(data.train.subset(np.arange(2000)))              # compile the kernel
        exact = 4 * data.n_users ** 2 / 2**30 < a.exact_gb
        if exact:
            NeighbourCF(kind='user', k=a.k).fit(data.train.subset(np.arange(2000)))
            rows.append(_row(data, NeighbourCF(kind='user', k=a.k), f'user CF exact top-{a.k}', None))
        for r in (sorted(set(a.ranks) | {a.rank}) if exact else [a.rank]):
            rows.append(_row(data, LowRankUserCF(rank=r, k=a.k), f'user CF rank-{r} top-{a.k}', r))
        print(pd.DataFrame(rows).tail(len(a.ranks) + 2 if exact else 1).to_string(index=False), flush=True)
        out = write_results('prize_user_cf', {'rows': pd.DataFrame(rows), 'sizes': a.sizes, 'k': a.k, 'rank': a.rank},
                            fingerprint=prize_fingerprint(), deps=list(DEPS),
                            command='python bench/bench_user_cf.py ' + ' '.join(argv if argv is not None else sys.argv[1:]))
        print(f'written {out}', flush=True)


if __name__ == '__main__':
    main()
