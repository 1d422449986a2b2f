"""Time and peak memory to read the full-size course files and build the CSR matrices.

Side by side, each in a fresh subprocess (peak memory = the child's VmHWM, its own high-water RSS):
  naive   - the earlier coursework's way: pandas read_csv with default options, dates parsed by pd.to_datetime
            without a format, ids mapped through Python dicts, scipy CSR.
  ours    - thu_big_data_ml.data.read_course_files(cache=False): typed C parser, vectorised validation
            (field count, ids, ratings, dates, duplicates), searchsorted index maps.
  cached  - the same through the joblib cache keyed by file content (second and later runs).
Run: .venv/bin/python bench/bench_data.py   (generates the full-size data on first use)
"""
import json
import subprocess
import sys
import textwrap

NAIVE = """
import pandas as pd, numpy as np, scipy.sparse as sp
from pathlib import Path
d = Path(FOLDER)
users = pd.read_csv(d/'users.txt', header=None, names=['user'])
tr = pd.read_csv(d/'netflix_train.txt', sep=' ', header=None, names=['user','movie','rating','date'])
te = pd.read_csv(d/'netflix_test.txt', sep=' ', header=None, names=['user','movie','rating','date'])
for df in (tr, te): df['date'] = pd.to_datetime(df['date'])
titles = pd.read_csv(d/'movie_titles.txt', header=None, names=['movie','year','title'], encoding='iso-8859-1',
                     on_bad_lines='skip')
uid = {u: i for i, u in enumerate(sorted(users['user']))}
mid = {m: i for i, m in enumerate(sorted(set(tr['movie']) | set(te['movie'])))}
def csr(df):
    r = df['user'].map(uid).to_numpy(); c = df['movie'].map(mid).to_numpy()
    return sp.csr_matrix((df['rating'].to_numpy(np.float32), (r, c)), shape=(len(uid), len(mid)))
Xtr, Xte = csr(tr), csr(te)
OUT = dict(nnz_train=int(Xtr.nnz), nnz_test=int(Xte.nnz), titles=len(titles))
"""

OURS = """
from thu_big_data_ml.data import read_course_files
d = read_course_files(FOLDER, cache=CACHE)
Xtr, Xte = d.X_train, d.X_test
OUT = dict(nnz_train=int(Xtr.nnz), nnz_test=int(Xte.nnz), titles=int(d.info['n_title_lines']))
"""

def run(code: str, folder: str, cache: bool = False) -> dict:
    "Run `code` in a fresh interpreter; return its OUT dict plus seconds and peak RSS (MB)."
    prog = (f"import time, resource, json\nFOLDER, CACHE = {folder!r}, {cache!r}\nt0 = time.perf_counter()\n"
            + textwrap.dedent(code)
            + "\nOUT['seconds'] = time.perf_counter() - t0"
            + "\nOUT['peak_mb'] = int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) / 1024"
            + "\nprint('RESULT', json.dumps(OUT))\n")
    p = subprocess.run([sys.executable, '-c', prog], capture_output=True, text=True)
    if p.returncode: raise RuntimeError(p.stderr[-2000:])
    return json.loads([l for l in p.stdout.splitlines() if l.startswith('RESULT')][-1][7:])

if __name__ == '__main__':
    from thu_big_data_ml.core import machine_info
    from thu_big_data_ml.data import load_course_data
    data = load_course_data()            # real files when present, else generated (made once)
    folder = data.info['folder']
    print(f"data: {data.source} files in {folder}: {len(data.train):,} train / {len(data.test):,} test ratings")
    print('machine:', machine_info())
    run(OURS, folder, cache=True)        # warm the cache for the cached row
    rows = {'naive (coursework)': run(NAIVE, folder), 'ours (cold, validated)': run(OURS, folder),
            'ours (joblib cache)': run(OURS, folder, cache=True)}
    base = rows['naive (coursework)']
    print(f"\n{'approach':26s} {'seconds':>8s} {'peak MB':>9s} {'speed-up':>9s} {'memory':>8s}")
    for k, r in rows.items():
        assert r['nnz_train'] == base['nnz_train'] and r['nnz_test'] == base['nnz_test'], (k, r, base)
        print(f"{k:26s} {r['seconds']:8.2f} {r['peak_mb']:9.0f} {base['seconds'] / r['seconds']:8.1f}x "
              f"{r['peak_mb'] / base['peak_mb']:7.2f}x")
