"""Cosine CF at the course size: time and peak memory of similarity + all test predictions, side by side.

Each approach runs in a fresh subprocess on the same arrays (peak memory = the child's own VmHWM high-water RSS, which
includes the input arrays that every child loads the same way):
  coursework - the earlier coursework's way: sklearn cosine_similarity on the sparse float64 matrix (dense
               float64 result), then dense (S @ X) / (S @ (X != 0)) in float64, read at the test pairs.
  ours       - thu_big_data_ml.cf.CosineCF: float32 SYRK similarity + numba sums at the test pairs only.
Undefined predictions get the same fallback chain (user mean -> movie mean -> global mean) on both sides, so the
RMSEs are comparable. `ours` runs before and after the coursework, so load changes on a shared machine show.
Run: .venv/bin/python bench/bench_cf.py [--scale full|small]   (full: generates the course-size data on first use)
Writes bench/results/cf_<scale>.json (read by nbs/02_cosine_cf.ipynb).

Reduced plan (`--baseline-users N`, what the chapter runs when no results file matches its data): the coursework
computes only N users' rows of its similarity and of its two dense products (both cost in proportion to the rows),
its times are extrapolated to all users (x n_users / N, the one-off dense copies of X not scaled), its peak memory is
estimated (its measured peak with the N users' dense rows replaced by all users': S, S X, B and S B, which the full
computation holds at once; sklearn's temporaries are not counted, so this is a lower bound), RMSEs compare the N users' test pairs, `ours` runs once.
`--out` writes the JSON elsewhere (the chapter uses a temporary file, so only `make bench-cf` writes results files).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

COMMON = """
import json, resource, sys, time
import numpy as np
z = np.load(INPUT)
u, i, r, tu, ti = z['u'], z['i'], z['r'], z['tu'], z['ti']
nu, ni = int(z['shape'][0]), int(z['shape'][1])
def rss_mb():  # VmHWM: this process's own high-water RSS (ru_maxrss would inherit the parent's across fork/exec)
    return int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) / 1024
def fallback(pred):
    "user mean -> movie mean -> global mean where pred is NaN"
    pred = pred.astype(np.float64)
    cu, ci = np.bincount(u, minlength=nu), np.bincount(i, minlength=ni)
    with np.errstate(invalid='ignore', divide='ignore'):
        um = np.bincount(u, r.astype(np.float64), minlength=nu) / cu
        im = np.bincount(i, r.astype(np.float64), minlength=ni) / ci
    todo = np.isnan(pred)
    for v in (um[tu], im[ti]):
        take = todo & np.isfinite(v); pred[take] = v[take]; todo &= ~take
    pred[todo] = r.astype(np.float64).mean()
    return pred
input_mb = rss_mb()
"""

COURSEWORK = """
import scipy.sparse as sp
from sklearn.metrics.pairwise import cosine_similarity
X = sp.csr_matrix((r.astype(np.float64), (u, i)), shape=(nu, ni))
t0 = time.perf_counter(); c0 = time.process_time()
S = cosine_similarity(X)                       # dense float64, as in the coursework
t1 = time.perf_counter()
Xd = X.toarray()
num = S @ Xd
B = (Xd != 0).astype(np.float64); del Xd
den = S @ B; del B
with np.errstate(invalid='ignore', divide='ignore'):
    pred = num[tu, ti] / den[tu, ti]
pred = fallback(pred)
t2 = time.perf_counter(); c2 = time.process_time()
undefined = None; mask = None; extra = {}
"""

# the coursework's computation restricted to N_SUB users' rows (S[sub] = cosine_similarity(X[sub], X), then S[sub] @ X
# and S[sub] @ B), timed in parts: the row-proportional parts are scaled by nu / N_SUB, the dense copies of X are not
COURSEWORK_SUBSET = """
import scipy.sparse as sp
from sklearn.metrics.pairwise import cosine_similarity
X = sp.csr_matrix((r.astype(np.float64), (u, i)), shape=(nu, ni))
sub = np.sort(np.random.default_rng(0).choice(nu, min(N_SUB, nu), replace=False))
scale = nu / len(sub)
w0 = time.perf_counter(); p0 = time.process_time()
S = cosine_similarity(X[sub], X)               # these users' rows of the dense float64 similarity
w1 = time.perf_counter(); p1 = time.process_time()
Xd = X.toarray(); B = (Xd != 0).astype(np.float64)
w2 = time.perf_counter(); p2 = time.process_time()
num = S @ Xd; den = S @ B                      # these users' rows of the two dense products
mask = np.isin(tu, sub); pos = np.searchsorted(sub, tu[mask])
pred = np.full(len(tu), np.nan)
with np.errstate(invalid='ignore', divide='ignore'):
    pred[mask] = num[pos, ti[mask]] / den[pos, ti[mask]]
pred[mask] = fallback(pred)[mask]
w3 = time.perf_counter(); p3 = time.process_time()
t0, c0 = 0.0, 0.0
t1 = (w1 - w0) * scale; t2 = t1 + (w2 - w1) + (w3 - w2) * scale; c2 = (p1 - p0 + p3 - p2) * scale + (p2 - p1)
undefined = None
extra = dict(reduced=True, baseline_users=int(len(sub)), scale=scale, measured_s=w3 - w0, measured_cpu_s=p3 - p0,
             # measured peak, with these users' dense rows swapped for all users' (S, S X, B and S B held at once)
             estimated_peak_mb=rss_mb() + 8 * ((nu * nu + 3 * nu * ni) - (len(sub) * nu + 2 * nu * ni + 2 * len(sub) * ni)) / 2 ** 20)
"""

OURS = """
from thu_big_data_ml.cf import CosineCF
tw = time.perf_counter()
wu, wi = np.array([0, 1, 1], u.dtype), np.array([0, 0, 1], i.dtype)      # same dtypes as the timed call
CosineCF().fit((wu, wi, np.array([1., 2., 3.], np.float32), 2, 2)).predict(np.array([0], tu.dtype), np.array([1], ti.dtype))
warmup = time.perf_counter() - tw              # numba kernels load from the on-disk cache (compile on the first run ever)
t0 = time.perf_counter(); c0 = time.process_time()
m = CosineCF().fit((u, i, r, nu, ni))
t1 = time.perf_counter()
pred = m.predict(tu, ti)
t2 = time.perf_counter(); c2 = time.process_time()
undefined = m.info_['pairs'] - m.info_['defined']; mask = None; extra = {}
"""

TAIL = """
np.save(PRED, np.asarray(pred, np.float32))
from thu_big_data_ml.metrics import rmse as _rmse       # after the timed part: the import costs no peak memory there
sel = slice(None) if mask is None else mask
rmse = _rmse(pred[sel], z['tr'][sel])
print('RESULT ' + json.dumps(dict(similarity_s=t1 - t0, predict_s=t2 - t1, total_s=t2 - t0, cpu_s=c2 - c0, peak_mb=rss_mb(),
                                  input_mb=input_mb, rmse=rmse, undefined=undefined,
                                  warmup_s=globals().get('warmup'), **extra)))
"""


def run_child(body: str, inp: Path, pred: Path, n_sub: int = 0) -> dict:
    code = f"INPUT = {str(inp)!r}\nPRED = {str(pred)!r}\nN_SUB = {int(n_sub)}\n" + COMMON + body + TAIL
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"child failed:\n{out.stderr[-3000:]}")
    line = [l for l in out.stdout.splitlines() if l.startswith('RESULT ')][-1]
    return json.loads(line[len('RESULT '):])


def main(scale: str = 'full', baseline_users: int = 0, out: str | None = None) -> dict:
    from thu_big_data_ml.core import project_root
    from thu_big_data_ml.data import load_course_data
    data = load_course_data(scale=scale)
    tr, te = data.train, data.test
    fingerprint = {'n_users': data.n_users, 'n_items': data.n_items, 'n_train': len(tr), 'n_test': len(te),
                   'rating_sum': float(tr.rating.sum(dtype=np.float64))}
    load0 = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / 'input.npz'
        np.savez(inp, u=tr.user, i=tr.item, r=tr.rating, tu=te.user, ti=te.item, tr=te.rating,
                 shape=np.array([data.n_users, data.n_items]))
        preds = {}
        reduced = 0 < baseline_users < data.n_users
        plan = ((('ours (run 1)', OURS), ('coursework (extrapolated)', COURSEWORK_SUBSET)) if reduced else
                (('ours (run 1)', OURS), ('coursework', COURSEWORK), ('ours (run 2)', OURS)))
        for name, body in plan:
            p = Path(tmp) / f"{name.split()[0]}{len(rows)}.npy"
            res = run_child(body, inp, p, baseline_users)
            preds[name] = np.load(p)
            rows.append({'approach': name, **res})
            print(f"{name:14s} similarity {res['similarity_s']:7.2f} s  predictions {res['predict_s']:7.2f} s  "
                  f"total {res['total_s']:7.2f} s  (CPU {res['cpu_s']:7.1f} s)  peak {res['peak_mb']:8.0f} MB  RMSE {res['rmse']:.6f}", flush=True)
    load1 = os.getloadavg()[0]
    base = next(r for r in rows if r['approach'].startswith('coursework'))
    cw = preds[base['approach']].astype(np.float64)
    mask = np.isfinite(cw)                                       # all pairs, or the reduced plan's users' pairs
    ours = min((r for r in rows if r['approach'].startswith('ours')), key=lambda r: r['total_s'])
    max_diff = max(float(np.max(np.abs(preds[k].astype(np.float64)[mask] - cw[mask]))) for k in preds if k.startswith('ours'))
    from thu_big_data_ml.metrics import rmse as _rmse
    ours_rmse = _rmse(preds[ours['approach']][mask], te.rating[mask])   # on the same pairs as the coursework
    summary = dict(baseline_s=base['total_s'], baseline_sim_s=base['similarity_s'], baseline_pred_s=base['predict_s'],
                   baseline_peak_mb=base.get('estimated_peak_mb', base['peak_mb']), baseline_rmse=base['rmse'],
                   ours_s=ours['total_s'], ours_sim_s=ours['similarity_s'], ours_pred_s=ours['predict_s'],
                   ours_peak_mb=max(r['peak_mb'] for r in rows if r['approach'].startswith('ours')),
                   ours_rmse=ours_rmse, ours_runs=sum(r['approach'].startswith('ours') for r in rows),
                   reduced=reduced, baseline_users=base.get('baseline_users', data.n_users), pairs_compared=int(mask.sum()),
                   speedup=base['total_s'] / ours['total_s'], baseline_cpu_s=base['cpu_s'], ours_cpu_s=ours['cpu_s'],
                   cpu_ratio=base['cpu_s'] / ours['cpu_s'],
                   memory_ratio=base.get('estimated_peak_mb', base['peak_mb']) / max(r['peak_mb'] for r in rows
                                                                                      if r['approach'].startswith('ours')),
                   rmse_diff=abs(base['rmse'] - ours_rmse), max_pred_diff=max_diff)
    summary['targets'] = {'under 10 s': summary['ours_s'] < 10, 'at least 6x faster': summary['speedup'] >= 6,
                          ('at most 1/4 peak memory (on a lower-bound estimate of the coursework\'s peak)' if reduced
                           else 'at most 1/4 peak memory'): summary['memory_ratio'] >= 4, 'RMSE equal to 1e-6': summary['rmse_diff'] < 1e-6}
    shared = 'a shared machine (other jobs were running)' if max(load0, load1) > 1.5 else 'an otherwise idle machine'
    result = dict(scale=scale, fingerprint=fingerprint, n_users=data.n_users, n_items=data.n_items,
                  n_train=len(tr), n_test=len(te), rows=rows, summary=summary,
                  machine=f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, {shared}",
                  load_average=[load0, load1], when=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                  note=(f"Timings were taken on {shared}: load average {load0:.1f} at the start and {load1:.1f} at "
                        f"the end on {os.cpu_count()} cores, so absolute seconds are inflated; the ratios compare runs "
                        f"made side by side." if max(load0, load1) > 1.5 else ""))
    path = Path(out) if out else project_root() / 'bench' / 'results' / f'cf_{scale}.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(summary, indent=1))
    if not out: print(f"written {path.relative_to(project_root())}")   # no machine paths in the report
    return result


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--scale', default='full', choices=['full', 'small'])
    ap.add_argument('--baseline-users', type=int, default=0,
                    help='reduced plan: the coursework on this many users, extrapolated (0: all users, measured)')
    ap.add_argument('--out', default=None, help='write the JSON here instead of bench/results/cf_<scale>.json')
    a = ap.parse_args()
    main(a.scale, a.baseline_users, a.out)
