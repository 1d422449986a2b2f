"""Chapter 08's Spark study (section 6): Spark ALS on MovieLens 1M with `local[2]`, its regParam chosen on the
chapter's validation split and refitted, against `mf.fit_mf` ALS at the same rank and sweeps (lambda chosen on the
same split, as the chapter chooses it). Writes bench/results/spark_als.json, which the chapter shows when it was made
on the same data, plan and code. Needs pyspark and Java 17+; minutes of CPU on 2 cores.

    make bench-spark          # or: .venv/bin/python bench/bench_spark.py
"""
from __future__ import annotations

import sys

# the chapter's report-scale plan (nbs/08_comparison.ipynb: CFG['full'] and SPARK_PLAN)
RANK, LAMS, SWEEPS, REGS, MAX_ITER = 20, (2.0, 5.0, 10.0), 6, (0.05, 0.1), 10


def main() -> int:
    from thu_big_data_ml.compare import choose_lam, spark_available, spark_fingerprint, spark_study
    from thu_big_data_ml.core import write_results
    from thu_big_data_ml.data import holdout_split, load_movielens
    ok, why = spark_available()
    if not ok:
        print(f'bench_spark: {why}'); return 2
    ml = load_movielens('1m')
    a, b = holdout_split(len(ml.train), 0.1, seed=1)            # the chapter's MovieLens test set
    train, test = ml.train.subset(a), ml.train.subset(b)
    lam = choose_lam(train, False, RANK, LAMS, SWEEPS)[0]
    payload = spark_study(train, test, rank=RANK, lam=lam, regs=REGS, max_iter=MAX_ITER)
    fp = spark_fingerprint(train, test, rank=RANK, lam=lam, regs=REGS, max_iter=MAX_ITER)
    out = write_results('spark_als', payload, fingerprint=fp, deps=['compare'], command='make bench-spark')
    print(f'bench_spark: {out.name} written'); print(payload)
    return 0


if __name__ == '__main__':
    sys.exit(main())
