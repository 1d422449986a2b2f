"""Benchmark of thu_big_data_ml.mf at full course size (side by side, one run, ratios).

Seconds per full-batch GD epoch at k=50 for the compiled sparse kernel (numba), JAX and PyTorch on the observed
entries, and the earlier coursework's dense approach (full U V^T each epoch, masked loss) in JAX and PyTorch;
ALS time to convergence (relative change of J < 1e-6); on MovieLens 1M the time to reach the aimed RMSE, against
Surprise's SVD when `scikit-surprise` is importable (it is not a project dependency: install it in a throwaway venv).

ALS section: plain against Anderson-accelerated ALS (`accel='anderson'`), time to a relative change of J below 1e-6
at lam=10 and lam=1, and at lam=0.01 what each reaches within a cap of sweeps, against J* = the lowest J of a longer
run (an upper bound of the minimum).

Usage: python bench/bench_mf.py [--scale full|small] [--epochs 3] [--skip-dense] [--skip-movielens] [--only als]
Writes bench/results/bench_mf.json (read by the chapter).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from thu_big_data_ml.core import machine_info                      # noqa: E402
from thu_big_data_ml.data import load_course_data, load_movielens, kfold_splits  # noqa: E402
from thu_big_data_ml.mf import fit_mf                               # noqa: E402
from thu_big_data_ml.metrics import score                           # noqa: E402
from thu_big_data_ml.reference import AIMS, published               # noqa: E402


def timed_epochs(train, backend: str, layout: str, epochs: int, k: int = 50, lam: float = 0.01) -> dict:
    "Wall and CPU seconds per GD epoch (median over `epochs`, after one warm-up epoch that includes compilation)."
    c0 = time.process_time()
    m = fit_mf(train, k=k, lam=lam, method='gd', backend=backend, layout=layout, max_iter=epochs + 1, tol=0.0,
               progress=False)
    cpu = time.process_time() - c0
    s = np.diff(m.history['seconds'].to_numpy())[1:]
    return {'backend': backend, 'layout': layout, 's/epoch': float(np.median(s)), 'min s/epoch': float(s.min()),
            'process CPU s (whole fit)': cpu, 'J after': float(m.history.J.iloc[-1])}


def als_to_convergence(train, k: int, lam: float, tol: float = 1e-6, max_iter: int = 200, biased: bool = False,
                       accel: str | None = None, init=None) -> tuple[dict, object]:
    "One ALS fit to a relative change of J below `tol` or `max_iter` sweeps (rejected accelerated sweeps included)."
    c0 = time.process_time()
    m = fit_mf(train, k=k, lam=lam, method='als', biased=biased, max_iter=max_iter, tol=tol, progress=False,
               accel=accel, init=init)
    h = m.history
    r = {'k': k, 'lam': lam, 'biased': biased, 'accel': accel or 'plain', 'sweeps': m.config['iters'],
         'rejected': m.config.get('rejected', 0), 'converged': m.config['converged'],
         'seconds': float(h.seconds.iloc[-1]), 's/sweep': float(h.seconds.iloc[-1] / max(1, m.config['iters'])),
         'process CPU s': time.process_time() - c0, 'J': float(h.J.iloc[-1]),
         'last rel. change': float(abs(h.J.iloc[-1] - h.J.iloc[-2]) / h.J.iloc[-2]), 'load average': os.getloadavg()[0]}
    return r, m


def movielens_time_to_rmse(aim: float = AIMS['ml-1m'], k: int = 50, lam: float = 0.05, reg: str = 'count') -> dict:
    "Fold 0 of the shared 5-fold split of MovieLens 1M: biased ALS sweeps until the held-out RMSE reaches `aim`."
    ml = load_movielens('1m')
    tr, te = kfold_splits(len(ml.train), k=5, seed=0)[0]
    trs, tes = ml.train.subset(tr), ml.train.subset(te)
    m = fit_mf(trs, k=k, lam=lam, reg=reg, method='als', biased=True, max_iter=25, tol=1e-6, val=tes, progress=False)
    h = m.history
    hit = h[h.val_rmse <= aim]
    out = {'data': 'ml-1m fold 0', 'model': f'biased ALS k={k} lam={lam:g} reg={reg}', 'aim': aim,
           'best RMSE': float(h.val_rmse.min()),
           'seconds to aim': float(hit.seconds.iloc[0]) if len(hit) else None,
           'sweeps to aim': int(hit.iter.iloc[0]) if len(hit) else None,
           'note': 'the held-out fold is monitored here only to time the curve; hyperparameters come from the chapter'}
    try:
        from surprise import SVD, Dataset, Reader                  # optional, not a project dependency
        df = pd.DataFrame({'u': trs.user, 'i': trs.item, 'r': trs.rating})
        data = Dataset.load_from_df(df, Reader(rating_scale=(1, 5))).build_full_trainset()
        t0 = time.perf_counter(); algo = SVD(random_state=0).fit(data); ts = time.perf_counter() - t0
        pred = np.array([algo.predict(u, i).est for u, i in zip(tes.user, tes.item)])
        out['surprise SVD seconds'] = ts
        out['surprise SVD RMSE'] = score(pred, tes.rating)['rmse']      # Surprise clips to [1, 5] itself; so does score
    except ImportError:
        out['surprise SVD'] = ('skipped: scikit-surprise is not installed (install it in a throwaway venv to compare; '
                               f"published 5-fold RMSE on 1M: SVD {published('1m', 'Surprise SVD')}, SVD++ {published('1m', 'Surprise SVD++')})")
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--scale', default='full', choices=['full', 'small'])
    ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--als-lam', type=float, nargs='+', default=[10.0, 1.0, 0.01])
    ap.add_argument('--only', choices=['als'], help='run only this section (the other results in the json are kept)')
    ap.add_argument('--als-small-lam-cap', type=int, default=40, help='sweeps for lam < 0.1 (not expected to converge)')
    ap.add_argument('--als-ref-sweeps', type=int, default=100,
                    help='extra accelerated sweeps from the lower capped result to estimate J* for lam < 0.1')
    ap.add_argument('--skip-dense', action='store_true')
    ap.add_argument('--skip-movielens', action='store_true')
    ap.add_argument('--skip-epochs', action='store_true', help='only ALS (and MovieLens)')
    ap.add_argument('--als-max-sweeps', type=int, default=120)
    ap.add_argument('--out', default=str(Path(__file__).resolve().parent / 'results' / 'bench_mf.json'))
    a = ap.parse_args(argv)
    if a.only == 'als': a.skip_epochs = a.skip_movielens = True

    data = load_course_data(scale=a.scale, progress=False)
    train = data.train
    load0 = os.getloadavg()
    note = (f'{data.name}: {train.n_users}x{train.n_items}, {len(train):,} training ratings, k=50; '
            f'load average at start {load0[0]:.1f} on {os.cpu_count()} CPUs'
            + (' (shared machine: wall times are inflated, ratios are side by side)' if load0[0] > 1.5 else ''))
    print(note, flush=True)
    variants = [] if a.skip_epochs else [('numba', 'sparse'), ('torch', 'sparse'), ('jax', 'sparse')]
    if not (a.skip_dense or a.skip_epochs): variants += [('torch', 'dense'), ('jax', 'dense')]
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    res = {'when': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), 'note': note, 'machine': machine_info(),
           'epochs': [], 'als': [], 'movielens': None}
    kept = []
    if a.only and out.exists():     # keep the sections that are not rerun
        old = json.loads(out.read_text())
        res.update({kk: old.get(kk) for kk in ('epochs', 'movielens') if old.get(kk)})
        res['note_other_sections'] = f"epochs / movielens from the run of {old.get('when')} ({old.get('note')})"
        kept = [r for r in old.get('als', []) if 'accel' in r and r['lam'] not in a.als_lam]   # other lambdas: keep
        if kept: res['note_other_sections'] += f"; ALS rows for lam={sorted({r['lam'] for r in kept})} from {old.get('when')}"
    def save():   # after every stage, so a run cut short still leaves its results
        res['load_average_end'] = os.getloadavg()
        out.write_text(json.dumps(res, indent=1, default=str))
    rows = []
    for b, l in variants:
        r = timed_epochs(train, b, l, a.epochs); rows.append(r)
        print(f"  GD epoch  {b:6s} {l:6s} {r['s/epoch']:8.3f} s/epoch (min {r['min s/epoch']:.3f})", flush=True)
    if rows:
        ep = pd.DataFrame(rows)
        base = ep[(ep.backend == 'torch') & (ep.layout == 'dense')]
        ref = float(base['s/epoch'].iloc[0]) if len(base) else float('nan')
        ep['speed-up vs dense torch'] = ref / ep['s/epoch']
        print(ep.to_string(index=False), flush=True)
        res['epochs'] = ep.to_dict('records'); save()

    als = list(kept)
    for lam in a.als_lam:
        cap = a.als_small_lam_cap if lam < 0.1 else a.als_max_sweeps
        fits = {}
        for accel in (None, 'anderson'):
            r, fits[accel] = als_to_convergence(train, 50, lam, max_iter=cap, accel=accel)
            r['cap (sweeps)'] = cap
            als.append(r); res['als'] = als; save()
            print(f"  ALS k=50 lam={lam:g} {r['accel']}: {r['sweeps']} sweeps ({r['rejected']} rejected), {r['seconds']:.1f} s, "
                  f"converged={r['converged']}, J={r['J']:.8g}, last relative change {r['last rel. change']:.1e}, "
                  f"load {r['load average']:.1f}", flush=True)
        if lam < 0.1 and a.als_ref_sweeps > 0:   # J*: continue the lower of the two for more accelerated sweeps
            lo = min(fits.values(), key=lambda m: m.history.J.iloc[-1])
            ref = fit_mf(train, k=50, lam=lam, method='als', accel='anderson', init=(lo.U, lo.V), max_iter=a.als_ref_sweeps,
                         tol=0.0, progress=False)
            J_star = float(min(ref.history.J.min(), lo.history.J.iloc[-1]))
            for r in als[-2:]:
                r['J*'] = J_star; r['J - J*'] = r['J'] - J_star; r['(J - J*) / J*'] = (r['J'] - J_star) / J_star
                r['J* note'] = (f'J* = lowest J after {cap} + {a.als_ref_sweeps} more accelerated sweeps '
                                '(an upper bound of the minimum)')
            res['als'] = als; save()
            print(f"  ALS lam={lam:g}: J* = {J_star:.8g}; J - J*: " + ', '.join(f"{r['accel']} {r['J - J*']:.4g}" for r in als[-2:]),
                  flush=True)
    ml = None
    if not a.skip_movielens:
        ml = movielens_time_to_rmse(); print(ml, flush=True)
        res['movielens'] = ml; save()
    save()
    print(f'wrote {out}')
    return res


if __name__ == '__main__':
    main()
