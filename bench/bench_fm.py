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
`metrics.score`. With `--likelihood probit`, myfm runs its ordered probit (`MyFMOrderedProbit`) on the same blocks.

Usage: .venv/bin/python bench/bench_fm.py [--data 100k|1m] [--protocol shared|rendle] [--folds 0 1 ...]
           [--features flipped] [--likelihood normal|probit] [--also FEATURES:LIKELIHOOD ...] [--k 10]
           [--sweeps 512] [--burn-in 64] [--myfm PYTHON] [--name NAME]
`--protocol rendle`: myFM's 10-fold split of the ratings in file order (`fm.myfm_split`, = myFM's
`load_rating_kfold_split(10, fold)`), fold 0 by default: Rendle's protocol, for the published 0.8140 on MovieLens 1M.
`--also`: more runs of our sampler per fold (myfm only gets the first run's blocks).
Writes bench/results/bench_fm_<data>_<protocol>.json with `core.write_results` (fingerprint: the ratings and the split
protocol; code: `code_digest('fm')`), which chapter 11 reads with `core.lookup_results`.

The chapter's own full-size studies (no myfm):
  bench/bench_fm.py --study ml100k   the feature-set table (9 settings x 5 shared folds, 512 sweeps) and the nested CV
  bench/bench_fm.py --study course   the course data's optional part on a seeded share of the users (--fraction):
                                     FM with and without dates / titles, chapter 08's time-aware MF, the noise floor
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
from thu_big_data_ml.core import code_digest, data_fingerprint, machine_info, write_results   # noqa: E402
from thu_big_data_ml.data import kfold_splits, load_movielens       # noqa: E402
from thu_big_data_ml.fm import fit_bayes_fm, movielens_side, myfm_split   # noqa: E402
from thu_big_data_ml.metrics import score                           # noqa: E402

HERE = Path(__file__).resolve().parent
WORKER = HERE / '_myfm_worker.py'
DEFAULT_MYFM = os.environ.get('MYFM_PYTHON') or '/tmp/myfm-venv/bin/python'
MYFM_FLIPPED = {'100k': 0.8772, '1m': 0.8220}     # issue 14: myfm 0.4.0, timeSVD++ flipped, shared folds (1m: fold 0)
TARGET = {('100k', 'shared'): 0.874, ('1m', 'shared'): 0.819, ('1m', 'rendle'): 0.812, ('100k', 'rendle'): None}
PUBLISHED = {('1m', 'rendle'): 0.8140}              # myFM documentation, MovieLens 1M example (Rendle's protocol)
PROTOCOLS = {'shared': "this lab's shared folds, kfold_splits(n, 5, seed=0)",
             'rendle': "Rendle's protocol as myFM runs it: load_rating_kfold_split(10, fold) (RandomState(0) shuffle of "
                       "the file order), fold 0"}


def splits_of(n: int, protocol: str) -> list:
    "The (train_idx, test_idx) pairs of a protocol: the shared 5 folds, or myFM's 10-fold split (Rendle's protocol)."
    if protocol == 'shared': return kfold_splits(n, 5, 0)
    return [myfm_split(n, 10, f, 0) for f in range(10)]


def fingerprint_of(data: str, protocol: str, train=None) -> str:
    "The data fingerprint a results file of this bench carries: the ratings and the split protocol."
    if train is None: train = load_movielens(data).train
    return data_fingerprint(train, PROTOCOLS[protocol])


def results_name(data: str, protocol: str) -> str:
    return f'bench_fm_{data}_{protocol}'


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
             dump: str | None = None, protocol: str = 'shared') -> dict:
    "Fit one fold in this process and describe it (RMSE, time per sweep, peak RSS); `dump`: save its blocks for myfm."
    ml = load_movielens(data)
    side = movielens_side(ml) if any(t in features for t in ('genres', 'year', 'title', 'age', 'gender', 'occupation')) else None
    tr_idx, te_idx = splits_of(len(ml.train), protocol)[fold]
    tr, te = ml.train.subset(tr_idx), ml.train.subset(te_idx)
    t0 = time.perf_counter()
    m = fit_bayes_fm(tr, features, k=k, n_samples=sweeps, burn_in=burn_in, seed=fold, val=te, side=side,
                     likelihood=likelihood, progress=False)
    h = m.history
    if dump: dump_blocks(dump, m.features, tr, te)
    return dict(fold=fold, features=features, likelihood=likelihood, rmse=score(m.val_prediction, te.rating)['rmse'], fit_seconds=time.perf_counter() - t0,
                sweep_ms=1000 * h.seconds.iloc[-1] / len(h), sweep_cpu_ms=1000 * h.cpu_seconds.iloc[-1] / len(h),
                peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                loadavg=os.getloadavg()[0], p=m.config['p'], nnz=m.config['nnz'])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', default='100k', choices=['100k', '1m'])
    ap.add_argument('--protocol', default='shared', choices=list(PROTOCOLS),
                    help="shared: the lab's 5 folds; rendle: myFM's 10-fold split (Rendle's protocol), fold 0 by default")
    ap.add_argument('--folds', type=int, nargs='+', default=[0])
    ap.add_argument('--features', default='flipped', help='feature set of the first run (the one myfm gets too)')
    ap.add_argument('--likelihood', default='normal', choices=['normal', 'probit'])
    ap.add_argument('--also', nargs='*', default=[], metavar='FEATURES:LIKELIHOOD',
                    help="more runs of our sampler per fold, e.g. flipped+user_bin+genres+year:probit (not given to myfm)")
    ap.add_argument('--k', type=int, default=None, help='rank (default: 10 on 100k, 32 on 1m, as myFM)')
    ap.add_argument('--sweeps', type=int, default=None, help='default: 512 on 100k, 256 on 1m')
    ap.add_argument('--burn-in', type=int, default=None, help='default: sweeps // 8')
    ap.add_argument('--myfm', default=DEFAULT_MYFM, help="python of a venv with myfm 0.4.0, or 'none'")
    ap.add_argument('--name', default=None, help='results file name (default: bench_fm_<data>_<protocol>)')
    ap.add_argument('--resume', action='store_true',
                    help='keep the folds of the existing results file when it was made on this data, code and setting')
    ap.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    ap.add_argument('--dump', default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    k = a.k or (10 if a.data == '100k' else 32)
    sweeps = a.sweeps or (512 if a.data == '100k' else 256)
    burn = a.burn_in if a.burn_in is not None else sweeps // 8
    if a.worker:
        print(json.dumps(one_fold(a.data, a.folds[0], a.features, k, sweeps, burn, a.likelihood, a.dump, a.protocol)))
        return {}
    runs = [(a.features, a.likelihood)]
    for r in a.also:
        fs, _, lk = r.rpartition(':')
        if not fs or lk not in ('normal', 'probit'): raise SystemExit(f"--also {r!r}: use FEATURES:normal or FEATURES:probit")
        runs.append((fs, lk))
    py = None if a.myfm == 'none' else a.myfm
    if py and not (Path(py).exists() and subprocess.run([py, '-c', 'import myfm'], capture_output=True).returncode == 0):
        print(f"no myfm at {py}: our sampler only (make a venv with: python3.11 -m venv /tmp/myfm-venv && "
              "/tmp/myfm-venv/bin/pip install myfm==0.4.0)", flush=True)
        py = None
    ml = load_movielens(a.data)
    splits = splits_of(len(ml.train), a.protocol)
    rows, done = resumed(a, runs, k, sweeps, burn, ml) if a.resume else ([], [])
    for f in a.folds:
        if f in done: continue
        with tempfile.TemporaryDirectory(prefix='bench_fm_') as d:
            dump = str(Path(d) / 'fold.npz')
            for ri, (fs, lk) in enumerate(runs):
                cmd = [sys.executable, __file__, '--worker', '--data', a.data, '--protocol', a.protocol, '--folds', str(f),
                       '--features', fs, '--k', str(k), '--sweeps', str(sweeps), '--burn-in', str(burn), '--likelihood', lk]
                out = subprocess.run(cmd + (['--dump', dump] if py and ri == 0 else []), capture_output=True, text=True)
                if out.returncode: raise SystemExit(f"fold {f} ({fs} / {lk}) failed:\n{out.stderr[-3000:]}")
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                r = rows[-1]
                print(f"fold {f} {fs} / {lk}: RMSE {r['rmse']:.4f}  {r['sweep_ms']:.0f} ms/sweep wall, {r['sweep_cpu_ms']:.0f} ms CPU  "
                      f"peak {r['peak_rss_mib']:.0f} MiB  load {r['loadavg']:.1f}", flush=True)
            if py:
                r = next(x for x in rows if x['fold'] == f and (x['features'], x['likelihood']) == runs[0])
                la = os.getloadavg()[0]
                out = subprocess.run([py, str(WORKER), dump, str(Path(d) / 'pred.npy'), '--sweeps', str(sweeps),
                                      '--burn-in', str(burn), '--k', str(k), '--seed', str(f), '--likelihood', runs[0][1]],
                                     capture_output=True, text=True)
                if out.returncode: raise SystemExit(f"myfm fold {f} failed:\n{out.stderr[-3000:]}")
                mr = json.loads(out.stdout.strip().splitlines()[-1])
                te = ml.train.subset(splits[f][1])
                mr.update(rmse=score(np.load(Path(d) / 'pred.npy'), te.rating)['rmse'], loadavg=la)
                r['myfm'] = mr
                print(f"   myfm ({runs[0][0]} / {runs[0][1]}): RMSE {mr['rmse']:.4f}  {mr['sweep_ms']:.0f} ms/sweep wall, "
                      f"{mr['sweep_cpu_ms']:.0f} ms CPU  peak {mr['peak_rss_mib']:.0f} MiB  load {la:.1f}  "
                      f"(ours/myfm CPU per sweep: {r['sweep_cpu_ms'] / mr['sweep_cpu_ms']:.2f})", flush=True)
            if f != a.folds[-1]: write_partial(a, runs, rows, done + [f], k, sweeps, burn, ml, argv)
            done.append(f)
    return write_partial(a, runs, rows, done, k, sweeps, burn, ml, argv, final=True)


def resumed(a, runs, k: int, sweeps: int, burn: int, ml) -> tuple[list, list]:
    "(rows, folds) of the existing results file when it matches this data, code, runs, rank, sweeps and burn-in."
    from thu_big_data_ml.core import lookup_results
    rec, why = lookup_results(a.name or results_name(a.data, a.protocol),
                              fingerprint=fingerprint_of(a.data, a.protocol, ml.train), deps=['fm'])
    p = (rec or {}).get('payload', {})
    same = rec is not None and (p.get('runs'), p.get('k'), p.get('sweeps'), p.get('burn_in')) == ([list(r) for r in runs], k, sweeps, burn)
    if not same:
        print(f"--resume: starting afresh ({why if rec is None else 'other runs, rank or sweeps'})", flush=True)
        return [], []
    done = [f for f in p['folds'] if f in a.folds]
    print(f"--resume: keeping folds {done} of {why}", flush=True)
    return [x for x in p['rows'] if x['fold'] in done], done


def write_partial(a, runs, rows, done: list, k: int, sweeps: int, burn: int, ml, argv, final: bool = False) -> dict:
    """Summarise the folds run so far and write the results file: after every fold, so that a long bench that is
    stopped keeps its finished folds (the chapter says how many of the requested folds a file holds)."""
    rows = [x for x in rows if x['fold'] in done]
    summary = []
    for fs, lk in runs:
        rr = [x for x in rows if (x['features'], x['likelihood']) == (fs, lk)]
        summary.append(dict(features=fs, likelihood=lk, folds=len(rr), mean_rmse=float(np.mean([x['rmse'] for x in rr])),
                            sweep_cpu_ms=float(np.mean([x['sweep_cpu_ms'] for x in rr])),
                            peak_rss_mib=float(max(x['peak_rss_mib'] for x in rr))))
    target = TARGET.get((a.data, a.protocol))
    res = dict(data=a.data, protocol=a.protocol, protocol_text=PROTOCOLS[a.protocol], folds=list(done),
               folds_requested=list(a.folds), k=k,
               sweeps=sweeps, burn_in=burn, runs=[list(r) for r in runs], rows=rows, summary=summary, target=target,
               myfm_flipped_issue=MYFM_FLIPPED[a.data] if a.protocol == 'shared' else None,
               published_myfm=PUBLISHED.get((a.data, a.protocol)),
               note='shared machine: wall time depends on the load (loadavg per fold); CPU time is the steadier figure. '
                    'Implicit features from the training part only (the stricter protocol).')
    mf = [x['myfm'] for x in rows if 'myfm' in x]
    if mf:
        ours = [x for x in rows if 'myfm' in x]
        res['myfm'] = dict(features=runs[0][0], likelihood=runs[0][1], mean_rmse=float(np.mean([m['rmse'] for m in mf])),
                           sweep_cpu_ms=float(np.mean([m['sweep_cpu_ms'] for m in mf])),
                           peak_rss_mib=float(max(m['peak_rss_mib'] for m in mf)),
                           cpu_per_sweep_ratio_ours_over_myfm=float(np.mean([o['sweep_cpu_ms'] / o['myfm']['sweep_cpu_ms'] for o in ours])),
                           note='myfm 0.4.0 on the same relation blocks, hyperprior groups, rank, sweeps and burn-in as our '
                                'first run, with the same output (Gaussian or ordered probit)')
        if final:
            print(f"myfm mean RMSE {res['myfm']['mean_rmse']:.4f}; ours/myfm CPU per sweep "
                  f"{res['myfm']['cpu_per_sweep_ratio_ours_over_myfm']:.2f}")
    for s_ in summary if final else []:
        print(f"{s_['features']} / {s_['likelihood']}: mean RMSE over {s_['folds']} fold(s) {s_['mean_rmse']:.4f} "
              f"(target {target}; published myFM {res['published_myfm']}; myFM flipped measured {res['myfm_flipped_issue']})")
    cmd = 'bench/bench_fm.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
    path = write_results(a.name or results_name(a.data, a.protocol), res,
                         fingerprint=fingerprint_of(a.data, a.protocol, ml.train), deps=['fm'], command=cmd)
    print(f"wrote {path} ({len(done)} of {len(a.folds)} folds)", flush=True)
    return res


# --- the chapter's studies at full size (the chapter reads their results files; see nbs/11_factorization_machines) ---

CHAPTER_SIDE = 'flipped+genres+year+age+gender+occupation'
CHAPTER_EXTRA = 'flipped+user_bin+genres+year'      # the inner hold-out of ML-100K fold 0 preferred it
CHAPTER_SETS = ([(fs, 'normal') for fs in ('mf', 'svd++', 'timesvd', 'timesvd++', 'flipped', CHAPTER_SIDE)]
                + [('flipped', 'probit'), (CHAPTER_SIDE, 'probit'), (CHAPTER_EXTRA, 'probit')])
CHAPTER_GRID = ([dict(features='flipped', k=10, likelihood=lk) for lk in ('normal', 'probit')]
                + [dict(features=CHAPTER_EXTRA, k=k, likelihood='probit') for k in (10, 32)])   # rank: the inner choice
COURSE_SETS = [('mf', 'normal'), ('mf+user_bin+item_bin', 'normal'), ('mf+title+year', 'normal'),
               ('mf+user_bin+item_bin+title+year', 'normal')]     # dates as drifting biases (user x bin, item x bin)
LEVELS = (0.5, 0.68, 0.8, 0.9, 0.95)
COURSE_FRACTION = 0.1                                # course study: share of the users (seeded)
COURSE_DEPS = ['fm', 'compare']     # the course study also fits chapter 08's time-aware MF (compare, mf)


def study_ml100k(sweeps: int = 512, burn_in: int = 64) -> tuple[dict, str]:
    "Chapter 11's ML-100K evidence at full size: the feature-set table (5 shared folds) and the nested 5-fold CV."
    from thu_big_data_ml.fm import feature_table, nested_cv_fm
    ml = load_movielens('100k'); side = movielens_side(ml)
    t0, c0 = time.perf_counter(), time.process_time()
    table = feature_table(ml, side, CHAPTER_SETS, [0, 1, 2, 3, 4], sweeps, burn_in, 10, levels=LEVELS)
    t1, c1 = time.perf_counter(), time.process_time()
    print(table.groupby(['features', 'output'], sort=False).rmse.mean().round(4), flush=True)
    ncv = nested_cv_fm(ml.train, CHAPTER_GRID, side=side, n_samples=sweeps, burn_in=burn_in)
    print(ncv[['fold', 'features', 'likelihood', 'inner_val_rmse', 'test_rmse']].round(4), flush=True)
    pay = dict(sets=[list(x) for x in CHAPTER_SETS], grid=CHAPTER_GRID, k=10, sweeps=sweeps, burn_in=burn_in,
               levels=list(LEVELS), table=table, nested_cv=ncv,
               table_seconds=t1 - t0, table_cpu_seconds=c1 - c0,
               nested_seconds=time.perf_counter() - t1, nested_cpu_seconds=time.process_time() - c1,
               loadavg=os.getloadavg()[0])
    return pay, data_fingerprint(ml.train, PROTOCOLS['shared'])


def course_subset(data, fraction: float, seed: int = 0):
    "The course train and test ratings of a seeded `fraction` of the users (indices kept, so the truth still applies)."
    keep = np.zeros(data.train.n_users, bool)
    keep[np.random.default_rng(seed).permutation(data.train.n_users)[:max(1, int(round(fraction * data.train.n_users)))]] = True
    return (data.train.subset(np.flatnonzero(keep[data.train.user])), data.test.subset(np.flatnonzero(keep[data.test.user])))


def time_mf_as_chapter08(train, test, years, k: int = 20, lams=(2.0, 5.0, 10.0), sweeps: int = 6, rounds: int = 2,
                         bins: int = 8) -> dict:
    """Chapter 08's answer to the optional part, with its settings (report scale): biased MF with lambda chosen on a 10%
    validation split, the time-aware variants started from it, the variant with the lowest validation RMSE scored on
    the test set (thu_big_data_ml.compare.fit_time_mf, called as chapter 08 calls it)."""
    from thu_big_data_ml.compare import fit_time_mf
    from thu_big_data_ml.data import holdout_split
    from thu_big_data_ml.metrics import evaluate
    from thu_big_data_ml.mf import fit_mf
    a, b = holdout_split(len(train), 0.1, 0)
    tr, va = train.subset(a), train.subset(b)
    val = {lam: evaluate(fit_mf(tr, k=k, lam=lam, method='als', biased=True, max_iter=sweeps, progress=False), va)['rmse']
           for lam in lams}
    lam = min(val, key=val.get)
    base = fit_mf(tr, k=k, lam=lam, method='als', biased=True, max_iter=sweeps, progress=False)
    variants = {'static biases (control)': dict(item_bins=False, user_drift=False),
                '+ item bias by time bin': dict(user_drift=False), '+ item bins + user drift': dict(),
                '+ item bins + user drift + year bias': dict(years=years)}
    rows = {'biased MF (mf.fit_mf)': (evaluate(base, va)['rmse'], base)}
    for name, kw in variants.items():
        m = fit_time_mf(tr, k=k, lam=lam, init=base, n_bins=bins, reg_bin=25.0, reg_drift=25.0, n_rounds=rounds,
                        als_sweeps=1, progress=False, **kw)
        rows[name] = (evaluate(m, va, day=va.day)['rmse'], m)
    best = min(rows, key=lambda n: rows[n][0])
    test_b = evaluate(base, test)['rmse']
    test_t = evaluate(rows[best][1], test, day=test.day)['rmse'] if best != 'biased MF (mf.fit_mf)' else test_b
    return dict(lam=lam, validation={n: r[0] for n, r in rows.items()}, chosen=best, test_biased_mf=test_b,
                test_time_mf=test_t)


def study_course(fraction: float = COURSE_FRACTION, k: int = 10, sweeps: int = 128, burn_in: int = 32, sets=None) -> tuple[dict, str]:
    """The assignment's optional part on the course data (generated Netflix-shaped files unless the real ones are there):
    on a seeded `fraction` of the users (all their train and test ratings), the FM with and without dates and titles,
    chapter 08's time-aware MF on the same ratings, and the generator's noise floor on the same test ratings (with and
    without the time term: what dates can give at most)."""
    from thu_big_data_ml.data import expected_rating, load_course_data
    from thu_big_data_ml.fm import course_side
    from thu_big_data_ml.metrics import rmse
    data = load_course_data(scale='full', progress=False)
    tr, te = course_subset(data, fraction)
    side = course_side(data)
    floor = no_time = None
    if data.truth is not None:
        floor = float(rmse(expected_rating(data.truth, te.user, te.item, te.day), te.rating))
        no_time = float(rmse(expected_rating(data.truth, te.user, te.item), te.rating))
    rows = []
    for fs, lk in (sets or COURSE_SETS):
        c0 = time.process_time()
        m = fit_bayes_fm(tr, fs, k=k, n_samples=sweeps, burn_in=burn_in, seed=0, val=te, side=side, likelihood=lk,
                         progress=False)
        h = m.history
        rows.append(dict(features=fs, output=lk, rmse=score(m.val_prediction, te.rating)['rmse'],
                         sweep_ms=1000 * h.seconds.iloc[-1] / len(h), cpu_ms=1000 * h.cpu_seconds.iloc[-1] / len(h),
                         cpu_seconds=time.process_time() - c0))
        print(rows[-1], flush=True)
    c0 = time.process_time()
    ch08 = time_mf_as_chapter08(tr, te, data.titles['year'])
    ch08['cpu_seconds'] = time.process_time() - c0
    print(ch08, flush=True)
    pay = dict(source=data.source, name=data.name, fraction=fraction, users=int(len(np.unique(tr.user))),
               train_ratings=len(tr), test_ratings=len(te), k=k, sweeps=sweeps, burn_in=burn_in, fm=rows,
               chapter08=ch08, noise_floor=floor, noise_floor_without_dates=no_time, loadavg=os.getloadavg()[0])
    return pay, data_fingerprint(data.train, data.test, fraction)


def run_study(study: str, argv_text: str, **kw) -> dict:
    pay, fp = (study_ml100k if study == 'ml100k' else study_course)(**kw)
    path = write_results(f'bench_fm_{study}', pay, fingerprint=fp, deps=COURSE_DEPS if study == 'course' else ['fm'], command=f'bench/bench_fm.py {argv_text}')
    print(f"wrote {path}")
    return pay


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == '--study':
        ap = argparse.ArgumentParser(description='chapter 11 studies at full size')
        ap.add_argument('--study', choices=['ml100k', 'course'], required=True)
        ap.add_argument('--sweeps', type=int, default=None); ap.add_argument('--burn-in', type=int, default=None)
        ap.add_argument('--fraction', type=float, default=COURSE_FRACTION, help='course: share of the users (seeded)')
        a = ap.parse_args()
        kw = {k: v for k, v in dict(sweeps=a.sweeps, burn_in=a.burn_in).items() if v is not None}
        if a.study == 'course': kw['fraction'] = a.fraction
        run_study(a.study, ' '.join(sys.argv[1:]), **kw)
    else:
        main()
