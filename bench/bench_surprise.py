"""MovieLens MF side by side with Surprise on the project's shared folds (one run, ratios).

For each of the shared folds (`kfold_splits(len(ml.train), k=5, seed=0)`) the same training and test triples (the
integer indices are the raw ids on both sides) go to
- Surprise's `SVD()` (and, on 100K, `SVDpp()`), default settings, random_state=0, run by bench/_surprise_worker.py in
  a throwaway venv that has scikit-surprise (never a project dependency);
- ours: the Bayesian MF `thu_big_data_ml.bayes.fit_bayes_mf` (Gibbs sampling) when that module exists, and the
  biased ALS `fit_mf(k=50, lam=0.05, reg='count', method='als', biased=True, max_iter=15, tol=1e-5)`.
Reported: test-fold RMSE (predictions clipped to [1, 5]), fit seconds (wall and process CPU), time to the aimed RMSE
(`reference.AIMS`: 0.845 on 1M, 0.900 on 100K) and Surprise SVD's fit seconds over each method's fit seconds (> 1: faster than SVD).

Time to aim is a diagnostic read of the training curve on the test fold: the test fold is passed as `val` only to
time the curve, after the fact; nothing is selected or stopped with it (hyperparameters are fixed above). Surprise
gives no curve: its time to aim is its fit time if its final RMSE reaches the aim, else 'never'.

Usage: .venv/bin/python bench/bench_surprise.py [--data 1m|100k|both] [--folds N] [--surprise-python PATH]
The Surprise interpreter defaults to $SURPRISE_PYTHON or /tmp/surprise-venv/bin/python; make it with
`make bench-surprise` or `python3.11 -m venv /tmp/surprise-venv && /tmp/surprise-venv/bin/pip install numpy pandas
scikit-surprise`. Without it the Surprise side is skipped with a message. Writes bench/results/bench_surprise.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from thu_big_data_ml.core import machine_info                      # noqa: E402
from thu_big_data_ml.data import load_movielens, kfold_splits       # noqa: E402
from thu_big_data_ml.metrics import evaluate, score                  # noqa: E402
from thu_big_data_ml.mf import fit_mf                               # noqa: E402
from thu_big_data_ml.reference import aim as reference_aim, published  # noqa: E402

try:                                                                # being written: optional until it lands
    from thu_big_data_ml.bayes import fit_bayes_mf                  # noqa: E402
except ImportError as e:
    fit_bayes_mf, BAYES_MISSING = None, f'{type(e).__name__}: {e}'
else:
    BAYES_MISSING = None

HERE = Path(__file__).resolve().parent
WORKER = HERE / '_surprise_worker.py'
AIM = {d: reference_aim(d) for d in ('1m', '100k')}                                             # reference.AIMS
PUBLISHED = {d: {'SVD': published(d, 'Surprise SVD'), 'SVDpp': published(d, 'Surprise SVD++')} for d in ('1m', '100k')}
DEFAULT_SURPRISE = os.environ.get('SURPRISE_PYTHON') or '/tmp/surprise-venv/bin/python'
MAKE_VENV = ('python3.11 -m venv /tmp/surprise-venv && /tmp/surprise-venv/bin/pip install numpy pandas scikit-surprise'
             '   (or: make bench-surprise)')
ALS_KW = dict(k=50, lam=0.05, reg='count', method='als', biased=True, max_iter=15, tol=1e-5)
# the settings chapter 10's nested CV chose in every fold (k=16 with the implicit term on 100K, k=32 on 1M)
BAYES_KW = {'100k': dict(k=16, n_samples=600, burn_in=100, implicit=True, seed=0),
            '1m': dict(k=32, n_samples=300, burn_in=50, implicit=False, seed=0)}


def load1() -> float: return round(os.getloadavg()[0], 2)


def time_to_aim(h: pd.DataFrame, aim: float) -> float | None:
    "First cumulative fit `seconds` at which the (test-fold) curve `val_rmse` is <= aim; None if never."
    hit = h[h['val_rmse'] <= aim]
    return float(hit['seconds'].iloc[0]) if len(hit) else None


def run_surprise(py: str, algo: str, tr, te, seed: int = 0, timeout: float = 3600) -> dict:
    "Fit Surprise's `algo` on the fold in the Surprise venv (a subprocess); its JSON result plus the load average."
    with tempfile.TemporaryDirectory(prefix='bench_surprise_') as d:
        f = Path(d) / 'fold.npz'
        np.savez(f, train_user=tr.user, train_item=tr.item, train_rating=tr.rating,
                 test_user=te.user, test_item=te.item, test_rating=te.rating)
        la = load1()
        p = subprocess.run([py, str(WORKER), str(f), algo, '--seed', str(seed)], capture_output=True, text=True,
                           timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f'Surprise worker failed ({algo}, exit {p.returncode}):\n{p.stderr[-3000:]}')
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r['load1_at_start'] = la
    return r


def run_als(tr, te, aim: float) -> dict:
    la = load1(); c0 = time.process_time()
    m = fit_mf(tr, val=te, progress=False, **ALS_KW)   # val only records the curve; the fit never reads it
    cpu = time.process_time() - c0
    h = m.history
    t0 = time.perf_counter(); rmse = evaluate(m, te)['rmse']; pred_s = time.perf_counter() - t0   # clipped to [1, 5]
    return {'rmse': rmse, 'fit_s': float(h.seconds.iloc[-1]), 'fit_cpu_s': cpu, 'predict_s': pred_s,
            'time_to_aim_s': time_to_aim(h, aim), 'iters': int(h.iter.iloc[-1]), 'load1_at_start': la,
            'curve': 'val_rmse unclipped (clipping only lowers it: the time to aim is conservative)'}


def run_bayes(tr, te, aim: float, kw: dict) -> dict:
    la = load1(); c0 = time.process_time()
    m = fit_bayes_mf(tr, val=te, progress=False, **kw)  # val only records the curve of the posterior mean
    cpu = time.process_time() - c0
    h = m.history
    t0 = time.perf_counter(); m.predict(te.user, te.item); pred_s = time.perf_counter() - t0
    rmse = score(m.val_prediction, te.rating)['rmse']   # posterior mean over all samples, clipped to [1, 5]
    return {'rmse': rmse, 'fit_s': float(h.seconds.iloc[-1]), 'fit_cpu_s': cpu, 'predict_s': pred_s,
            'time_to_aim_s': time_to_aim(h, aim), 'samples': int(h['sample'].iloc[-1]), 'load1_at_start': la}


def warm_up() -> None:
    "Compile the numba kernels (and the Bayesian sampler's, if any) on a tiny fit, so no fit below pays for it."
    ml = load_movielens('100k'); small = ml.train.subset(np.arange(20_000))
    fit_mf(small, **{**ALS_KW, 'max_iter': 1}, progress=False)
    if fit_bayes_mf is not None:
        for kw in BAYES_KW.values(): fit_bayes_mf(small, **{**kw, 'n_samples': 3, 'burn_in': 1}, progress=False)


def fmt_s(x) -> str: return 'never' if x is None or (isinstance(x, float) and np.isnan(x)) else f'{x:.1f}'


def table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    svd = df[df.method == 'Surprise SVD'].set_index(['data', 'fold'])['fit_s']
    df['speed ratio vs SVD'] = [svd.get((d, f), np.nan) / s for d, f, s in zip(df.data, df.fold, df.fit_s)]
    return df


def summary(df: pd.DataFrame) -> pd.DataFrame:
    "Per-fold rows plus a mean row per (data, method); time to aim averaged only when every fold reached it."
    out = []
    for (d, meth), g in df.groupby(['data', 'method'], sort=False):
        for _, r in g.iterrows():
            out.append({'data': d, 'fold': str(r.fold), 'method': meth, 'RMSE': r.rmse, 'fit s': r.fit_s,
                        'fit CPU s': r.fit_cpu_s, 'time to aim s': fmt_s(r.time_to_aim_s),
                        'speed ratio vs SVD': r['speed ratio vs SVD'], 'load1': r.load1_at_start})
        tta = g.time_to_aim_s
        mean_tta = fmt_s(float(tta.mean())) if tta.notna().all() else (
            'never' if tta.isna().all() else f'{fmt_s(float(tta.mean()))} ({tta.notna().sum()}/{len(g)} folds)')
        out.append({'data': d, 'fold': 'mean', 'method': meth, 'RMSE': g.rmse.mean(), 'fit s': g.fit_s.mean(),
                    'fit CPU s': g.fit_cpu_s.mean(), 'time to aim s': mean_tta,
                    'speed ratio vs SVD': g['speed ratio vs SVD'].mean(), 'load1': g.load1_at_start.mean()})
    return pd.DataFrame(out)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', default='1m', choices=['1m', '100k', 'both'])
    ap.add_argument('--folds', type=int, default=5, help='run the first N of the 5 shared folds')
    ap.add_argument('--surprise-python', default=DEFAULT_SURPRISE)
    ap.add_argument('--bayes-samples', type=int, default=None, help='override the number of Gibbs sweeps')
    ap.add_argument('--skip-als', action='store_true', help='leave out the biased-ALS row')
    ap.add_argument('--out', default=str(HERE / 'results' / 'bench_surprise.json'))
    a = ap.parse_args(argv)
    if not 1 <= a.folds <= 5: ap.error('--folds must be between 1 and 5')
    bayes_kws = {d: {**kw, **({'n_samples': a.bayes_samples} if a.bayes_samples else {})} for d, kw in BAYES_KW.items()}

    py = a.surprise_python
    has_surprise = Path(py).exists() and subprocess.run([py, '-c', 'import surprise'], capture_output=True).returncode == 0
    if not has_surprise:
        print(f'Surprise side SKIPPED: no interpreter with scikit-surprise at {py}.\n  Make one with: {MAKE_VENV}\n'
              f'  (or point --surprise-python / $SURPRISE_PYTHON at one)', flush=True)
    if fit_bayes_mf is None:
        print(f'Bayesian MF row SKIPPED: thu_big_data_ml.bayes is not importable yet ({BAYES_MISSING})', flush=True)

    datasets = ['100k', '1m'] if a.data == 'both' else [a.data]
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    try:
        import numba; threads = numba.get_num_threads()
    except ImportError: threads = None
    res = {'when': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), 'machine': machine_info(),
           'numba_threads': threads, 'load_average_start': os.getloadavg(),
           'surprise_python': py if has_surprise else None, 'surprise_skipped': None if has_surprise else
           f'no interpreter with scikit-surprise at {py}; make one with: {MAKE_VENV}',
           'bayes_skipped': BAYES_MISSING, 'aim': {d: AIM[d] for d in datasets}, 'published_surprise_5fold': PUBLISHED,
           'settings': {'als': ALS_KW, 'bayes': bayes_kws, 'surprise': 'SVD() / SVDpp() defaults, random_state=0'},
           'note': ('time to aim: first cumulative fit second at which the running test-fold RMSE is <= aim; a '
                    'diagnostic read on the test fold, not used to select or stop anything. Surprise has no curve: '
                    'its time to aim is its fit time when its final RMSE reaches the aim. Speed ratio = Surprise SVD '
                    'fit s / method fit s on the same fold (> 1: faster). Surprise runs single-threaded; ours use '
                    f'{threads} numba threads, so fit CPU s is reported too. One heavy process at a time.'),
           'rows': []}

    def save():
        res['load_average_end'] = os.getloadavg()
        out.write_text(json.dumps(res, indent=1, default=str))

    print(f'load average at start: {os.getloadavg()} on {os.cpu_count()} CPUs; numba threads {threads}', flush=True)
    warm_up()
    rows = res['rows']
    for d in datasets:
        ml = load_movielens(d); aim = AIM[d]
        print(f'== MovieLens {d}: {len(ml.train):,} ratings, {ml.train.n_users} users x {ml.train.n_items} items; '
              f'aim RMSE {aim}', flush=True)
        for j, (tr_idx, te_idx) in enumerate(kfold_splits(len(ml.train), k=5, seed=0)[:a.folds]):
            tr, te = ml.train.subset(tr_idx), ml.train.subset(te_idx)
            jobs = []
            if has_surprise:
                jobs.append(('Surprise SVD', lambda: run_surprise(py, 'svd', tr, te)))
                if d == '100k': jobs.append(('Surprise SVD++', lambda: run_surprise(py, 'svdpp', tr, te)))
            if fit_bayes_mf is not None:
                bkw = bayes_kws[d]
                jobs.append((f"ours Bayesian MF k={bkw['k']}{' +implicit' if bkw['implicit'] else ''} ({bkw['n_samples']} sweeps)",
                             lambda: run_bayes(tr, te, aim, bkw)))
            if not a.skip_als:
                jobs.append((f"ours biased ALS k={ALS_KW['k']} ({ALS_KW['max_iter']} sweeps)",
                             lambda: run_als(tr, te, aim)))
            for name, job in jobs:                          # strictly one after another
                r = job()
                if name.startswith('Surprise'):
                    r['time_to_aim_s'] = r['fit_s'] if r['rmse'] <= aim else None
                r = {'data': d, 'fold': j, 'method': name, **r}
                rows.append(r); save()
                print(f"  fold {j} {name:38s} RMSE {r['rmse']:.4f}  fit {r['fit_s']:7.1f} s  (CPU {r['fit_cpu_s']:7.1f} s)"
                      f"  to aim {fmt_s(r['time_to_aim_s']):>6s}  load1 {r['load1_at_start']}", flush=True)
    if rows:
        df = table(rows)
        for r, ratio in zip(rows, df['speed ratio vs SVD']): r['speed_ratio_vs_svd'] = None if np.isnan(ratio) else ratio
        s = summary(df)
        res['summary'] = s.to_dict('records')
        show = s.copy()
        for c, f in [('RMSE', '{:.4f}'), ('fit s', '{:.1f}'), ('fit CPU s', '{:.1f}'), ('speed ratio vs SVD', '{:.2f}'),
                     ('load1', '{:.2f}')]:
            show[c] = [('-' if np.isnan(x) else f.format(x)) for x in show[c]]
        with pd.option_context('display.width', 200, 'display.max_columns', 20):
            print(show.to_string(index=False))
    print(f"aim: {', '.join(f'{d} {AIM[d]}' for d in datasets)}. Time to aim is a diagnostic read on the test fold, "
          'not used to select anything. Published Surprise 5-fold RMSE: '
          + '; '.join(f"{d}: SVD {v['SVD']}, SVD++ {v['SVDpp']}" for d, v in PUBLISHED.items()))
    print(f'load average at end: {os.getloadavg()}')
    save()
    print(f'wrote {out}')
    return res


if __name__ == '__main__':
    main()
