"""Chapter 12's full study: Netflix-Prize-layout data at 1M, 10M, 30M and 100M ratings (generated once into
data/prize_generated/<n>/), read cold and from the Parquet copy, then MF GD / Adam epochs, ALS sweeps and item CF
(seconds per iteration, CPU seconds, peak memory, probe RMSE vs the noise floor), the user-CF wall, and optionally
Spark ALS on the Parquet copy (--spark, needs pyspark and Java 17+). Writes bench/results/prize.json.

    python bench/bench_prize.py --sizes 1000000 2000000
    make bench-prize                      # the default sizes (a quiet machine: the 100M size needs ~20 GB disk)

Spark alone (`--spark-only`): Spark ALS on the Parquet copy of each size's generated folder (made by a run above), or
on one `--parquet` path (a cluster's distributed storage), written to bench/results/prize_spark.json:

    python bench/bench_prize.py --spark-only --sizes 1000000 10000000            # local[2]
    spark-submit --master yarn --deploy-mode client --num-executors 8 --executor-cores 4 --executor-memory 8g \
      bench/bench_prize.py --spark-only --parquet hdfs:///data/prize/ratings.parquet --master yarn --blocks 64
"""
import argparse
import os
import sys
import time

import pandas as pd

from thu_big_data_ml.core import machine_info, write_results
from thu_big_data_ml.prize import BENCH_SIZES, PRIZE_DEPS, prize_fingerprint, run_size


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--sizes', type=int, nargs='+', default=list(BENCH_SIZES), help='ratings per size')
    ap.add_argument('--k', type=int, default=50, help='rank of the factorisations (the issue\'s targets: k=50)')
    ap.add_argument('--epochs', type=int, default=5, help='GD / Adam epochs timed')
    ap.add_argument('--sweeps', type=int, default=5, help='ALS sweeps timed')
    ap.add_argument('--methods', nargs='+', default=['gd', 'adam', 'als', 'item_cf'])
    ap.add_argument('--spark', action='store_true', help='also Spark ALS (local[2]) on the Parquet copy')
    ap.add_argument('--spark-only', action='store_true', help='only Spark ALS (see the module docstring)')
    ap.add_argument('--parquet', default=None, help='--spark-only: this Parquet copy instead of the sizes\' folders')
    ap.add_argument('--master', default='local[2]', help="--spark-only: Spark master ('local[2]', 'yarn', ...)")
    ap.add_argument('--blocks', type=int, default=None, help='--spark-only: ALS user and item blocks')
    ap.add_argument('--checkpoint-dir', default=None, help='--spark-only: checkpoint folder (a cluster: HDFS path)')
    ap.add_argument('--driver-memory', default='6g', help='--spark-only: spark.driver.memory (local mode: the JVM)')
    a = ap.parse_args(argv)
    if a.spark_only: return spark_only(a, argv)
    tables, facts = [], []
    for n in a.sizes:
        t0 = time.perf_counter(); c0 = time.process_time()
        df, f = run_size(n, k=a.k, methods=tuple(a.methods), progress=True, spark=a.spark,
                         n_epochs=a.epochs, n_sweeps=a.sweeps)
        f.update(total_wall_s=time.perf_counter() - t0, total_cpu_s=time.process_time() - c0, load_avg=os.getloadavg())
        tables.append(df); facts.append(f)
        print(f"== {n:,} ratings: read {f['read_mb_per_s']:.0f} MB/s cold ({f['read_mb_per_cpu_s']:.0f} MB per CPU s), "
              f"load {f['load_parquet_s']:.2f} s ({f['load_parquet_cpu_s']:.2f} CPU s); load average {os.getloadavg()[0]:.1f}")
        cols = ['method', 's_per_iter', 'cpu_s', 'peak_mb', 'probe_rmse', 'noise_floor']
        print(df[cols].round(4).to_string(index=False))
        if 'spark' in f: print('spark:', {k: v for k, v in f['spark'].items() if k != 'pred'})
        sys.stdout.flush()
        out = write(tables, facts, a, argv)        # after every size: a stopped run keeps the sizes it finished
        print(f'written {out.name} ({len(facts)} of {len(a.sizes)} sizes)', flush=True)


def spark_only(a, argv) -> None:
    "Spark ALS on each size's Parquet copy (or on `--parquet`), at the in-process bench's rank, penalty and sweeps."
    from thu_big_data_ml.compare import spark_session
    from thu_big_data_ml.prize import prize_folder, prize_parquet, spark_als_parquet
    lam = 0.05                                              # time_methods' ALS-WR penalty; Spark's regParam = 2 lam
    paths = [(None, a.parquet)] if a.parquet else [(n, prize_parquet(prize_folder(n))) for n in a.sizes]
    spark = spark_session(a.master, driver_memory=a.driver_memory)
    rows = []
    try:
        for n, path in paths:
            r = spark_als_parquet(path, rank=a.k, reg=2 * lam, max_iter=a.sweeps, master=a.master, blocks=a.blocks,
                                  checkpoint_dir=a.checkpoint_dir, spark=spark)
            r.update(n_ratings=n, parquet=str(path), load_avg=os.getloadavg())
            rows.append(r)
            print({k: v for k, v in r.items() if k != 'pred'}, flush=True)
            if a.parquet is None:
                out = write_results('prize_spark', {'rows': rows, 'sizes': [x['n_ratings'] for x in rows], 'k': a.k,
                                                    'machine': machine_info()},
                                    fingerprint=prize_fingerprint(), deps=list(PRIZE_DEPS),
                                    command=_command(argv))
                print(f'written {out.name} ({len(rows)} of {len(paths)} sizes)', flush=True)
    finally:
        spark.stop()


def _command(argv) -> str:
    "The command line a results file records."
    return 'python bench/bench_prize.py ' + ' '.join(argv if argv is not None else sys.argv[1:])


def write(tables: list, facts: list, a, argv):
    "The results file of the sizes measured so far."
    return write_results('prize', {'methods': pd.concat(tables, ignore_index=True), 'facts': facts,
                                   'sizes': [f['n_ratings'] for f in facts], 'sizes_requested': a.sizes, 'k': a.k,
                                   'machine': machine_info()},
                         fingerprint=prize_fingerprint(), deps=list(PRIZE_DEPS),
                         command=_command(argv))


if __name__ == '__main__':
    main()
