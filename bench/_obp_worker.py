"""Worker for bench/bench_obp.py: obp 0.4.1's own off-policy estimators on given inputs, and obp's own pipeline on
the Open Bandit Dataset small sample; prints nothing but writes one JSON file.

Runs in a throwaway venv that has obp (never a project dependency): `python3.11 -m venv /tmp/obp-venv &&
/tmp/obp-venv/bin/pip install torch==2.13.0 obp==0.4.1 'pandas<2' 'numpy<2'` (obp 0.4.1's dataset loader calls
`DataFrame.drop(col, 1)`, which pandas 2 removed; pandas 1.5 needs numpy 1.x). Imports only the standard library,
numpy, scikit-learn and obp.

Usage: python _obp_worker.py INPUTS.npz OUT.json [--n-sim-obd 100000] [--n-boot 10000]
INPUTS.npz holds arrays named <group>__<key>, key in reward, action, position, pscore, action_dist, q_hat; groups
case<i> are small synthetic inputs, the others (e.g. random_all) the real logs with our action distribution and our
reward model, so that obp's estimators run on exactly the inputs ours saw.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import numpy as np

warnings.filterwarnings('ignore')
import obp                                                                   # noqa: E402
from obp.dataset import OpenBanditDataset                                    # noqa: E402
from obp.ope import (DirectMethod, DoublyRobust, DoublyRobustWithShrinkage,  # noqa: E402
                     InverseProbabilityWeighting, RegressionModel, SelfNormalizedInverseProbabilityWeighting,
                     SwitchDoublyRobust)
from obp.policy import BernoulliTS, Random                                   # noqa: E402
from sklearn.linear_model import LogisticRegression                          # noqa: E402

TAUS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)   # the default grids of propensity.ope_report
LAMS = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


def estimators():
    "Our method name (with its hyperparameter) -> an obp estimator."
    out = {'ips': InverseProbabilityWeighting(), 'snips': SelfNormalizedInverseProbabilityWeighting(),
           'dm': DirectMethod(), 'dr': DoublyRobust()}
    out |= {f'switch-dr tau={t:g}': SwitchDoublyRobust(tau=t) for t in TAUS}
    out |= {f'dr-os lam={lam:g}': DoublyRobustWithShrinkage(lambda_=lam) for lam in LAMS}
    return out


def run_estimators(inp: dict, n_boot: int, seed: int) -> dict:
    "obp's value and bootstrap interval of every estimator on one set of inputs."
    kw = dict(reward=inp['reward'], action=inp['action'], position=inp['position'], pscore=inp['pscore'],
              action_dist=inp['action_dist'], estimated_rewards_by_reg_model=inp['q_hat'])
    out = {}
    for name, est in estimators().items():
        v = float(est.estimate_policy_value(**kw))
        ci = est.estimate_interval(**kw, alpha=0.05, n_bootstrap_samples=n_boot, random_state=seed)
        lo, hi = (float(ci[k]) for k in ci if 'lower' in k), (float(ci[k]) for k in ci if 'upper' in k)
        out[name] = {'value': v, 'boot_mean': float(ci['mean']), 'lower': next(lo), 'upper': next(hi)}
    return out


def obd_pipeline(behavior: str, campaign: str, n_sim: int, n_boot: int, seed: int = 12345) -> dict:
    """obp's own example pipeline (examples/obd): its loader, the evaluation policy's distribution (BernoulliTS with
    the ZOZOTOWN prior, or Random), a cross-fitted logistic RegressionModel, and its estimators."""
    t0 = time.perf_counter()
    ds = OpenBanditDataset(behavior_policy=behavior, campaign=campaign)
    bf = ds.obtain_batch_bandit_feedback()
    if behavior == 'random':
        pol = BernoulliTS(n_actions=ds.n_actions, len_list=ds.len_list, is_zozotown_prior=True, campaign=campaign,
                          random_state=seed)
        dist = pol.compute_batch_action_dist(n_sim=n_sim, n_rounds=bf['n_rounds'])
    else:
        pol = Random(n_actions=ds.n_actions, len_list=ds.len_list, random_state=seed)
        dist = pol.compute_batch_action_dist(n_rounds=bf['n_rounds'])
    t1 = time.perf_counter()
    reg = RegressionModel(n_actions=ds.n_actions, len_list=ds.len_list, action_context=ds.action_context,
                          base_model=LogisticRegression(C=100, max_iter=10000, random_state=seed))
    q = reg.fit_predict(context=bf['context'], action=bf['action'], reward=bf['reward'], position=bf['position'],
                        pscore=bf['pscore'], n_folds=3, random_state=seed)
    t2 = time.perf_counter()
    inp = dict(reward=bf['reward'], action=bf['action'], position=bf['position'], pscore=bf['pscore'],
               action_dist=dist, q_hat=q)
    other = 'bts' if behavior == 'random' else 'random'
    truth = OpenBanditDataset.calc_on_policy_policy_value_estimate(behavior_policy=other, campaign=campaign)
    res = run_estimators(inp, n_boot, seed)
    return {'behavior': behavior, 'evaluation': other, 'campaign': campaign, 'n_rounds': int(bf['n_rounds']),
            'ground_truth': float(truth), 'on_policy_logging': float(bf['reward'].mean()),
            'action_dist': dist[0].tolist(), 'q_hat_mean': float(q.mean()), 'estimates': res,
            'seconds': {'action_dist': t1 - t0, 'reward_model': t2 - t1, 'estimators': time.perf_counter() - t2}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('inputs'); ap.add_argument('out')
    ap.add_argument('--n-sim-obd', type=int, default=100_000)
    ap.add_argument('--n-sim-small', type=int, default=2_000)
    ap.add_argument('--n-boot', type=int, default=10_000)
    ap.add_argument('--n-boot-small', type=int, default=200)
    ap.add_argument('--campaign', default='all')
    a = ap.parse_args(argv)
    z = np.load(a.inputs)
    groups = sorted({k.split('__')[0] for k in z.files})
    keys = ('reward', 'action', 'position', 'pscore', 'action_dist', 'q_hat')
    res = {'obp': obp.__version__, 'python': platform.python_version(), 'numpy': np.__version__,
           'synthetic': {}, 'on_our_inputs': {}, 'bts_action_dist': {}, 'obd': {}}
    for g in groups:
        inp = {k: z[f'{g}__{k}'] for k in keys}
        if g.startswith('case'): res['synthetic'][g] = run_estimators(inp, a.n_boot_small, seed=7)
        else: res['on_our_inputs'][g] = run_estimators(inp, a.n_boot, seed=12345)
    for c in ('all', 'men', 'women'):
        n_actions = {'all': 80, 'men': 34, 'women': 46}[c]
        pol = BernoulliTS(n_actions=n_actions, len_list=3, is_zozotown_prior=True, campaign=c, random_state=12345)
        res['bts_action_dist'][c] = {'n_sim': a.n_sim_small, 'seed': 12345,
                                     'dist': pol.compute_batch_action_dist(n_sim=a.n_sim_small)[0].tolist()}
    for b in ('random', 'bts'):
        res['obd'][f'{b}_{a.campaign}'] = obd_pipeline(b, a.campaign, a.n_sim_obd, a.n_boot)
    with open(a.out, 'w') as f: json.dump(res, f)


if __name__ == '__main__':
    main()
