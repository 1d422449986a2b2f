"""Our off-policy estimators side by side with obp 0.4.1's, on the same inputs and on the Open Bandit Dataset.

Three comparisons in one run:
1. obp's estimators (IPW, SNIPW, DM, DR, Switch-DR, DR-os) on a few small deterministic synthetic inputs: their
   values and bootstrap intervals are stored in tests/fixtures/obp_ope.json (numbers only, no data), which
   tests/test_ope.py checks ours against to 1e-9;
2. obp's BernoulliTS slot-wise distribution (ZOZOTOWN prior) for each campaign, and obp's own example pipeline on the
   small sample (its loader, BernoulliTS / Random, a cross-fitted logistic RegressionModel, its estimators), stored
   in the same fixture for the chapter's side-by-side table;
3. obp's estimators on exactly our inputs for the real logs (our loader, our action distribution, our reward model):
   the largest difference to ours is printed and must be below 1e-9.

obp runs in a throwaway venv, never a project dependency (bench/_obp_worker.py):
  python3.11 -m venv /tmp/obp-venv && /tmp/obp-venv/bin/pip install torch==2.13.0 obp==0.4.1 'pandas<2' 'numpy<2'
(obp 0.4.1's loader calls `DataFrame.drop(col, 1)`, removed in pandas 2.) The interpreter defaults to $OBP_PYTHON or
/tmp/obp-venv/bin/python.

Usage: .venv/bin/python bench/bench_obp.py [--obp-python PATH] [--n-sim 100000] [--n-boot 10000] [--no-fixture]
Writes tests/fixtures/obp_ope.json (unless --no-fixture) and bench/results/bench_obp.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from thu_big_data_ml.core import machine_info                                     # noqa: E402
from thu_big_data_ml.propensity import (OPE_METHODS, bts_action_dist, bts_prior,  # noqa: E402
                                        fit_reward_model, load_open_bandit, ope_bootstrap, ope_estimate,
                                        uniform_action_dist)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKER = HERE / '_obp_worker.py'
FIXTURE = ROOT / 'tests' / 'fixtures' / 'obp_ope.json'
DEFAULT_OBP = os.environ.get('OBP_PYTHON') or '/tmp/obp-venv/bin/python'
TAUS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)   # the worker's grids = the defaults of ope_report
LAMS = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


def synthetic_cases() -> dict[str, dict[str, np.ndarray]]:
    "Small deterministic bandit inputs (legacy RandomState: its stream is frozen across numpy versions)."
    out = {}
    for c, (n, A, L, binary) in enumerate([(30, 4, 3, True), (50, 6, 1, True), (40, 5, 2, False)]):
        rs = np.random.RandomState(100 + c)
        dist = rs.dirichlet(np.ones(A), size=(n, L)).transpose(0, 2, 1)             # sums to 1 over actions
        dist[: n // 3] = np.eye(A)[rs.randint(0, A, (n // 3, L))].transpose(0, 2, 1)  # some deterministic rounds
        action = rs.randint(0, A, n)
        pscore = rs.uniform(0.05, 1.0, n)
        pscore[:3] = 1.0
        reward = rs.binomial(1, 0.3, n).astype(float) if binary else rs.normal(1.0, 0.5, n)
        out[f'case{c}'] = dict(reward=reward, action=action.astype(np.int64), position=rs.randint(0, L, n).astype(np.int64),
                               pscore=pscore, action_dist=dist, q_hat=rs.uniform(0, 1, (n, A, L)))
    return out


def ours_on(inp: dict, n_boot: int, seed: int) -> dict:
    "Our value and interval of every estimator, keyed like the worker's output."
    kw = dict(reward=inp['reward'], action=inp['action'], pscore=inp['pscore'], action_dist=inp['action_dist'],
              position=inp['position'], q_hat=inp['q_hat'])
    specs = [(m, {}) for m in ('ips', 'snips', 'dm', 'dr')]
    specs += [(f'switch-dr tau={t:g}', {'tau': t}) for t in TAUS] + [(f'dr-os lam={lam:g}', {'lam': lam}) for lam in LAMS]
    out = {}
    for key, hp in specs:
        m = key.split(' ')[0]
        b = ope_bootstrap(m, **kw, **hp, n_boot=n_boot, seed=seed, renormalize=False)
        out[key] = {'value': ope_estimate(m, **kw, **hp).value, 'boot_mean': b['mean'], 'lower': b['lower'],
                    'upper': b['upper']}
    return out


def max_diff(a: dict, b: dict) -> float:
    return max(abs(a[k][f] - b[k][f]) for k in a for f in a[k])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--obp-python', default=DEFAULT_OBP)
    ap.add_argument('--n-sim', type=int, default=100_000)
    ap.add_argument('--n-sim-small', type=int, default=2_000)
    ap.add_argument('--n-boot', type=int, default=10_000)
    ap.add_argument('--campaign', default='all')
    ap.add_argument('--no-fixture', action='store_true')
    a = ap.parse_args(argv)
    if not Path(a.obp_python).exists():
        sys.exit(f"no obp interpreter at {a.obp_python}; make one (see this file's docstring) or pass --obp-python")
    t0 = time.perf_counter()
    cases = synthetic_cases()
    logs = {p: load_open_bandit(p, a.campaign) for p in ('random', 'bts')}
    pi = {'random': bts_action_dist(*bts_prior(a.campaign), 3, n_sim=a.n_sim, seed=12345),     # evaluated on random
          'bts': uniform_action_dist(logs['bts'].n_actions, 3)}                               # evaluated on bts
    real = {}
    for p, L in logs.items():
        t = time.perf_counter(); q = fit_reward_model(L, n_folds=3, seed=12345)
        real[f'{p}_{a.campaign}'] = dict(reward=L.reward, action=L.action, position=L.position, pscore=L.pscore,
                                        action_dist=np.broadcast_to(pi[p], (len(L), *pi[p].shape)).copy(), q_hat=q)
        print(f"our reward model on the {p} log: {time.perf_counter() - t:.1f} s")
    t_ours = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix='bench_obp_') as d:
        f, out = Path(d) / 'inputs.npz', Path(d) / 'out.json'
        np.savez(f, **{f'{g}__{k}': v for g, inp in (cases | real).items() for k, v in inp.items()})
        t = time.perf_counter()
        p = subprocess.run([a.obp_python, str(WORKER), str(f), str(out), '--n-sim-obd', str(a.n_sim),
                            '--n-sim-small', str(a.n_sim_small), '--n-boot', str(a.n_boot), '--campaign', a.campaign],
                           capture_output=True, text=True)
        if p.returncode != 0: raise RuntimeError(f"obp worker failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
        t_obp = time.perf_counter() - t
        res = json.loads(out.read_text())

    report = {'synthetic max |ours - obp|': max(max_diff(ours_on(cases[c], 200, 7), res['synthetic'][c]) for c in cases)}
    t = time.perf_counter()
    report['real logs, our inputs: max |ours - obp|'] = max(
        max_diff(ours_on(real[g], a.n_boot, 12345), res['on_our_inputs'][g]) for g in real)
    t_boot = time.perf_counter() - t
    report['BTS distribution (n_sim_small): max |ours - obp|'] = max(
        float(np.abs(bts_action_dist(*bts_prior(c), 3, n_sim=a.n_sim_small, seed=12345)
                     - np.asarray(res['bts_action_dist'][c]['dist'])).max()) for c in ('all', 'men', 'women'))
    o = res['obd'][f'random_{a.campaign}']
    report['BTS distribution (n_sim, obp pipeline): max |ours - obp|'] = float(np.abs(pi['random'] - np.asarray(o['action_dist'])).max())
    mine = {g: ours_on(real[g], 1, 0) for g in real}
    report['ours vs obp pipeline, per estimator'] = {
        g: {k: {'ours': mine[g][k]['value'], 'obp': v['value']} for k, v in res['obd'][g]['estimates'].items()}
        for g in real}
    report['ground truth'] = {g: res['obd'][g]['ground_truth'] for g in real}
    report['seconds'] = {'ours: load, simulate, two reward models': t_ours, 'obp worker (all of it)': t_obp,
                         f'ours: all estimators with {a.n_boot} resamples, both logs': t_boot,
                         'obp pipeline parts': {g: res['obd'][g]['seconds'] for g in real}}
    report['machine'] = machine_info() | {'loadavg_1min': round(os.getloadavg()[0], 2)}
    report['versions'] = {'obp': res['obp'], 'obp venv numpy': res['numpy']}
    print(json.dumps({k: v for k, v in report.items() if 'per estimator' not in k}, indent=1, default=str))
    ok = report['synthetic max |ours - obp|'] < 1e-9 and report['real logs, our inputs: max |ours - obp|'] < 1e-9
    print('equal to obp on the same inputs (1e-9):', ok)

    if not a.no_fixture:
        fx = {'meta': {'date': datetime.date.today().isoformat(), 'obp': res['obp'], 'campaign': a.campaign,
                       'n_sim_obd': a.n_sim, 'n_boot': a.n_boot, 'synthetic_n_boot': 200, 'synthetic_seed': 7,
                       'note': 'numbers computed by obp 0.4.1 (bench/bench_obp.py); synthetic inputs only, no data'},
              'synthetic': {c: {'inputs': {k: v.tolist() for k, v in cases[c].items()}, 'obp': res['synthetic'][c]}
                            for c in cases},
              'bts_action_dist': res['bts_action_dist'],
              'obd': {g: {k: v for k, v in r.items() if k != 'seconds'} for g, r in res['obd'].items()}}
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(json.dumps(fx, indent=None, separators=(',', ':')) + '\n')
        print(f"wrote {FIXTURE.relative_to(ROOT)} ({FIXTURE.stat().st_size / 1024:.0f} KiB)")
    res_dir = HERE / 'results'; res_dir.mkdir(exist_ok=True)
    (res_dir / 'bench_obp.json').write_text(json.dumps(report, indent=1, default=str))
    if not ok: sys.exit(1)
    return report


if __name__ == '__main__':
    main()
