"""Item-based AutoRec at full scale: the three protocols of nbs/03a_autoencoder.ipynb (ML-100K and ML-1M on the shared
5-fold splits, and the paper's random 90/10 split of ML-1M), nested (lambda and epochs chosen on an inner 10% hold-out of
each training part, the test part scored once). Too long for the chapter's time budget, so it runs here and writes
bench/results/autorec.json (core.write_results, keyed by the data, splits, settings and the autorec module's code),
which the chapter reads.
Run: .venv/bin/python bench/bench_autorec.py [--only NAME ...]   (make bench-autorec)
"""
import argparse
import os
import resource
import sys
import time

from thu_big_data_ml.autorec import FULL_FIT, nested_autorec, protocols, results_fingerprint
from thu_big_data_ml.core import write_results
from thu_big_data_ml.data import load_movielens


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--dry-run', action='store_true', help='print the plan and the fingerprint, fit nothing')
    a = ap.parse_args(argv)
    train = {v: load_movielens(v).train for v in ('100k', '1m')}
    plan, fit = protocols({v: len(t) for v, t in train.items()}), dict(FULL_FIT)
    fp = results_fingerprint(train, fit)
    print(f'fingerprint {fp}; plan: ' + '; '.join(f'{n}: {len(sp)} split(s), grid {g}' for n, (_, sp, g) in plan.items()), flush=True)
    if a.dry_run: return
    results, timing = {}, {}
    for name in sorted(plan, key=lambda n: '90/10' not in n):     # the paper's protocol first: its figure comes soonest
        v, splits, grid = plan[name]
        w0, c0, l0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF), os.getloadavg()[0]
        tab = nested_autorec(train[v], splits, grid, 0.1, 0, False, **fit)
        c1 = resource.getrusage(resource.RUSAGE_SELF)
        timing[name] = {'wall_s': time.perf_counter() - w0, 'cpu_s': c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime,
                        'load_start': l0, 'load_end': os.getloadavg()[0]}
        results[name] = tab
        print(f"{name}: RMSE {tab.test_rmse.mean():.4f} (lam {tab.lam.tolist()}, epochs {tab.epochs.tolist()}); "
              f"{timing[name]['wall_s']:.0f} s wall, {timing[name]['cpu_s']:.0f} s CPU, load {l0:.1f}", flush=True)
    results = {name: results[name] for name in plan}
    out = write_results('autorec', {'results': results, 'timing': timing, 'fit': fit}, fingerprint=fp, deps=['autorec'],
                        command='make bench-autorec')
    print(f'wrote {out}')


if __name__ == '__main__':
    sys.exit(main())
