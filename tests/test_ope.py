"""Off-policy estimators (thu_big_data_ml.propensity, bandit part): equal to obp 0.4.1 on the same inputs (numbers
stored once by bench/bench_obp.py in tests/fixtures/obp_ope.json), unbiased where theory says so, strict on bad
input; the Open Bandit Dataset loader names file and line of a bad row."""
import json
from pathlib import Path

import numpy as np
import pytest

from thu_big_data_ml.data import DataFormatError, _package_file
from thu_big_data_ml.propensity import (OPE_METHODS, BanditLog, bts_action_dist, bts_prior, check_action_dist,
                                        fit_reward_model, load_open_bandit, ope_bootstrap, ope_estimate,
                                        ope_report, ope_round_rewards, tune_ope, uniform_action_dist)

FIXTURE = Path(__file__).parent / 'fixtures' / 'obp_ope.json'
REF = json.loads(FIXTURE.read_text())
HAS_OBD = _package_file('obp', 'dataset/obd/random/all/all.csv') is not None
needs_obd = pytest.mark.skipif(not HAS_OBD, reason='obp data carrier not installed (pip install --no-deps obp==0.4.1)')


def _inputs(case):
    i = REF['synthetic'][case]['inputs']
    return dict(reward=np.array(i['reward'], float), action=np.array(i['action'], np.int64),
                position=np.array(i['position'], np.int64), pscore=np.array(i['pscore'], float),
                action_dist=np.array(i['action_dist'], float), q_hat=np.array(i['q_hat'], float))


def _spec(key):
    m, *hp = key.split(' ')
    return m, ({'tau': float(hp[0].split('=')[1])} if m == 'switch-dr' else
               {'lam': float(hp[0].split('=')[1])} if m == 'dr-os' else {})


@pytest.mark.parametrize('case', sorted(REF['synthetic']))
def test_estimators_equal_obp_on_the_same_inputs(case):
    kw, obp = _inputs(case), REF['synthetic'][case]['obp']
    assert {_spec(k)[0] for k in obp} == set(OPE_METHODS)
    for key, ref in obp.items():
        m, hp = _spec(key)
        assert abs(ope_estimate(m, **kw, **hp).value - ref['value']) < 1e-9, key
        b = ope_bootstrap(m, **kw, **hp, n_boot=REF['meta']['synthetic_n_boot'], seed=REF['meta']['synthetic_seed'],
                          renormalize=False)
        for ours, theirs in (('mean', 'boot_mean'), ('lower', 'lower'), ('upper', 'upper')):
            assert abs(b[ours] - ref[theirs]) < 1e-9, (key, ours)


@needs_obd
@pytest.mark.parametrize('campaign', ['all', 'men', 'women'])
def test_bts_action_dist_equals_obp(campaign):
    ref = REF['bts_action_dist'][campaign]
    ours = bts_action_dist(*bts_prior(campaign), 3, n_sim=ref['n_sim'], seed=ref['seed'])
    np.testing.assert_allclose(ours, np.array(ref['dist']), rtol=0, atol=1e-12)


@needs_obd
def test_open_bandit_dataset_matches_obp_pipeline():
    "Our loader, BTS distribution and the model-free estimators reproduce obp's own pipeline on the real logs."
    camp = REF['meta']['campaign']
    logs = {p: load_open_bandit(p, camp) for p in ('random', 'bts')}
    for p, L in logs.items():
        o = REF['obd'][f'{p}_{camp}']
        assert len(L) == o['n_rounds'] and L.n_actions == 80 and L.len_list == 3
        assert abs(L.on_policy_value - o['on_policy_logging']) < 1e-12
        assert abs(logs[o['evaluation']].on_policy_value - o['ground_truth']) < 1e-12
        dist = (bts_action_dist(*bts_prior(camp), 3, n_sim=REF['meta']['n_sim_obd'], seed=12345) if p == 'random'
                else uniform_action_dist(L.n_actions, 3))
        np.testing.assert_allclose(dist, np.array(o['action_dist']), rtol=0, atol=1e-12)
        for m in ('ips', 'snips'):           # no reward model: the same inputs, so the same numbers
            v = ope_estimate(m, L.reward, L.action, L.pscore, dist, L.position).value
            assert abs(v - o['estimates'][m]['value']) < 1e-9, (p, m)


def _bandit(n, rng, n_actions=5, len_list=2):
    "A synthetic slate-slot bandit: 3 user types, known click probabilities; returns log arrays and both policies."
    x = rng.integers(0, 3, n)
    q = np.linspace(0.05, 0.6, 3 * n_actions * len_list).reshape(3, n_actions, len_list)[x]      # (n, A, L)
    logits = np.stack([np.sin(np.arange(n_actions) * (k + 1) + x[:, None]) for k in range(len_list)], 2)
    pi_b = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pi_e = np.exp(-2 * logits) / np.exp(-2 * logits).sum(1, keepdims=True)
    k = rng.integers(0, len_list, n)
    cum = pi_b[np.arange(n), :, k].cumsum(1)
    a = np.minimum((rng.random(n)[:, None] > cum).sum(1), n_actions - 1)
    r = (rng.random(n) < q[np.arange(n), a, k]).astype(float)
    truth = float((pi_e * q).sum(1).mean())        # value of pi_e on these contexts and slots, averaged
    return dict(reward=r, action=a, pscore=pi_b[np.arange(n), a, k], action_dist=pi_e, position=k), q, truth


def test_ips_and_dr_unbiased_on_a_synthetic_bandit():
    rng = np.random.default_rng(0)
    est = {'ips': [], 'dr': [], 'truth': []}
    for _ in range(300):
        kw, q, truth = _bandit(400, rng)
        est['ips'].append(ope_estimate('ips', **kw).value)
        est['dr'].append(ope_estimate('dr', **kw, q_hat=np.full_like(q, 0.5)).value)   # a poor model: still unbiased
        est['truth'].append(truth)
    for m in ('ips', 'dr'):
        e = np.array(est[m]) - np.array(est['truth'])
        assert abs(e.mean()) < 3 * e.std(ddof=1) / np.sqrt(len(e)), (m, e.mean())


def test_estimator_limits_and_se():
    kw, q, truth = _bandit(2000, np.random.default_rng(1))
    kw['q_hat'] = q * 0.9
    dr, dm = ope_estimate('dr', **kw).value, ope_estimate('dm', **kw).value
    assert ope_estimate('switch-dr', **kw, tau=np.inf).value == pytest.approx(dr, abs=1e-15)
    assert ope_estimate('switch-dr', **kw, tau=0.0).value == pytest.approx(dm, abs=1e-15)
    assert ope_estimate('dr-os', **kw, lam=0.0).value == pytest.approx(dm, abs=1e-15)
    assert ope_estimate('dr-os', **kw, lam=1e12).value == pytest.approx(dr, rel=1e-6)
    e = ope_estimate('ips', **kw)
    x = ope_round_rewards('ips', **{k: v for k, v in kw.items() if k != 'q_hat'})
    assert e.se == pytest.approx(x.std(ddof=1) / np.sqrt(len(x)))
    # a context-free (n_actions, len_list) table is the same as that table in every round
    tab = uniform_action_dist(5, 2)
    base = {k: v for k, v in kw.items() if k != 'action_dist'}
    assert ope_estimate('dr', **base, action_dist=tab).value == pytest.approx(
        ope_estimate('dr', **base, action_dist=np.broadcast_to(tab, (len(kw['reward']), 5, 2)).copy()).value, abs=1e-15)


def test_bootstrap_is_seeded_and_brackets():
    kw, q, _ = _bandit(500, np.random.default_rng(2))
    a = ope_bootstrap('snips', **kw, n_boot=300, seed=5)
    assert a == ope_bootstrap('snips', **kw, n_boot=300, seed=5)
    assert a != ope_bootstrap('snips', **kw, n_boot=300, seed=6)
    assert a['lower'] <= ope_estimate('snips', **kw).value <= a['upper']


@pytest.mark.parametrize('bad, msg', [(0.0, '> 0'), (1.5, '<= 1'), (np.nan, 'NaN'), (-0.1, '> 0')])
def test_bad_propensities_are_rejected(bad, msg):
    kw, _, _ = _bandit(50, np.random.default_rng(3))
    kw['pscore'] = kw['pscore'].copy(); kw['pscore'][7] = bad
    for m in ('ips', 'snips', 'dr'):
        with pytest.raises(ValueError, match=msg):
            ope_estimate(m, **kw, q_hat=np.zeros((50, 5, 2)))


def test_bad_inputs_are_rejected():
    kw, q, _ = _bandit(50, np.random.default_rng(4))
    with pytest.raises(ValueError, match='needs q_hat'): ope_estimate('dr', **kw)
    with pytest.raises(ValueError, match='method must be one of'): ope_estimate('ipw', **kw)
    with pytest.raises(ValueError, match='shape'): ope_estimate('dr', **kw, q_hat=q[:, :4])
    with pytest.raises(ValueError, match='NaN'): ope_estimate('dr', **kw, q_hat=np.where(q > 0.5, np.nan, q))
    bad = kw['action_dist'].copy(); bad[0, 0, 0] += 0.5
    with pytest.raises(ValueError, match='sum to 1'): ope_estimate('ips', **{**kw, 'action_dist': bad})
    with pytest.raises(ValueError, match=r'\[0, 1\]'): ope_estimate('ips', **{**kw, 'action_dist': -kw['action_dist']})
    with pytest.raises(ValueError, match='shape'): ope_estimate('ips', **{**kw, 'action_dist': kw['action_dist'][:10]})
    with pytest.raises(TypeError, match='integers'): ope_estimate('ips', **{**kw, 'action': kw['action'].astype(float)})
    with pytest.raises(ValueError, match=r'action indices'): ope_estimate('ips', **{**kw, 'action': kw['action'] + 5})
    with pytest.raises(ValueError, match='positions'): ope_estimate('ips', **{**kw, 'position': kw['position'] + 2})
    with pytest.raises(ValueError, match='mismatched'): ope_estimate('ips', **{**kw, 'reward': kw['reward'][:-1]})
    with pytest.raises(ValueError, match='NaN'): ope_estimate('ips', **{**kw, 'reward': np.full(50, np.nan)})
    with pytest.raises(ValueError, match='tau'): ope_estimate('switch-dr', **kw, q_hat=q, tau=-1)
    with pytest.raises(ValueError, match='lam'): ope_estimate('dr-os', **kw, q_hat=q, lam=np.nan)
    with pytest.raises(ValueError, match='no rounds'):
        ope_estimate('ips', np.zeros(0), np.zeros(0, np.int64), np.zeros(0), np.zeros((2, 1)))
    with pytest.raises(ValueError, match='sum to 1'): check_action_dist(np.full((3, 2), 0.2), 4)
    with pytest.raises(ValueError, match='switch-dr'): tune_ope('dr', [1.0], **kw, q_hat=q)


def _write_obd(root: Path, rows: list[dict] | None = None, n_items: int = 4):
    "A tiny folder in the Open Bandit Dataset format (random/all): 6 rows, 4 items, obp's column layout."
    d = root / 'random' / 'all'; d.mkdir(parents=True)
    (d / 'item_context.csv').write_text(',item_id,item_feature_0,item_feature_1\n'
                                        + ''.join(f'{i},{i},{0.1 * i},{"ab"[i % 2]}\n' for i in range(n_items)))
    cols = ['timestamp', 'item_id', 'position', 'click', 'propensity_score', 'user_feature_0']
    rows = rows or [dict(timestamp=f'2019-11-24 00:00:0{t}+00:00', item_id=t % n_items, position=t % 3 + 1,
                         click=int(t == 2), propensity_score=0.25, user_feature_0='uv'[t % 2]) for t in range(6)]
    (d / 'all.csv').write_text(',' + ','.join(cols) + '\n'
                               + ''.join(f'{t},' + ','.join(str(r[c]) for c in cols) + '\n' for t, r in enumerate(rows)))
    return d / 'all.csv'


def test_loader_on_a_tiny_folder(tmp_path):
    _write_obd(tmp_path)
    L = load_open_bandit('random', 'all', folder=tmp_path)
    assert isinstance(L, BanditLog) and len(L) == 6 and L.n_actions == 4 and L.len_list == 3
    assert L.action.dtype == np.int64 and set(L.position) == {0, 1, 2} and L.reward.sum() == 1
    assert L.context.shape == (6, 1) and L.action_context.shape == (4, 3)
    assert L.on_policy_value == pytest.approx(1 / 6)


@pytest.mark.parametrize('field, value, line, msg', [
    ('propensity_score', 0, 4, r'propensity_score must be a finite number in \(0, 1\]'),
    ('propensity_score', 1.5, 5, 'propensity_score'),
    ('propensity_score', 'nan', 3, 'propensity_score'),
    ('propensity_score', '', 7, 'propensity_score'),
    ('item_id', 4, 2, r'item_id must be an integer in \[0, 3\]'),
    ('item_id', 1.5, 3, 'item_id must be an integer'),
    ('position', 4, 6, 'position'),
    ('click', 2, 4, 'click'),
    ('timestamp', 'yesterday', 5, 'timestamp'),
])
def test_loader_errors_name_file_and_line(tmp_path, field, value, line, msg):
    rows = [dict(timestamp=f'2019-11-24 00:00:0{t}+00:00', item_id=t % 4, position=t % 3 + 1, click=0,
                 propensity_score=0.25, user_feature_0='u') for t in range(6)]
    rows[line - 2][field] = value                          # header = line 1, row r = line r + 2
    path = _write_obd(tmp_path, rows)
    with pytest.raises(DataFormatError, match=msg) as e:
        load_open_bandit('random', 'all', folder=tmp_path)
    assert e.value.line == line and e.value.path == path and f'all.csv:{line}:' in str(e.value)


def test_loader_structural_errors(tmp_path):
    path = _write_obd(tmp_path)
    text = path.read_text().splitlines(keepends=True)
    path.write_text(''.join(text[:3]) + text[3].rstrip('\n') + ',extra,field\n' + ''.join(text[4:]))
    with pytest.raises(DataFormatError, match='malformed CSV') as e: load_open_bandit('random', 'all', folder=tmp_path)
    assert e.value.line == 4
    path.write_text(text[0].replace('propensity_score', 'pscore') + ''.join(text[1:]))
    with pytest.raises(DataFormatError, match="missing column 'propensity_score'"): load_open_bandit('random', 'all', folder=tmp_path)
    with pytest.raises(FileNotFoundError): load_open_bandit('bts', 'all', folder=tmp_path)
    with pytest.raises(ValueError, match='policy'): load_open_bandit('greedy', 'all', folder=tmp_path)


def test_reward_model_is_cross_fitted_and_report_runs():
    rng = np.random.default_rng(5); n, A = 600, 4
    kw, q, truth = _bandit(n, rng, n_actions=A, len_list=3)
    log = BanditLog('random', 'all', kw['action'], kw['position'], kw['reward'], kw['pscore'],
                    np.eye(3)[rng.integers(0, 3, n)][:, 1:], np.arange(A, dtype=float)[:, None], np.arange(n), A, 3)
    qh = fit_reward_model(log, n_folds=3, seed=0)
    assert qh.shape == (n, A, 3) and np.all((qh > 0) & (qh < 1))
    flipped = BanditLog(**{**log.__dict__, 'reward': np.where(np.arange(n) == 10, 1 - log.reward, log.reward)})
    np.testing.assert_allclose(fit_reward_model(flipped, n_folds=3, seed=0)[10], qh[10], atol=0)   # own reward unused
    t = ope_report(log, kw['action_dist'], qh, truth=truth, n_boot=50, seed=0)
    assert list(t.policy) == ['random'] + ['new'] * len(OPE_METHODS)
    assert np.all(t.lower <= t.upper) and np.all(np.isfinite(t['relative error']))
    assert t.attrs['tau'] in (1, 2, 5, 10, 20, 50, 100) and t.attrs['lam'] in (1, 10, 100, 1e3, 1e4, 1e5)


def test_boot_means_many_equals_boot_means_row_by_row():
    "One resampling stream for many series (counts x matrix product) equals the per-series bootstrap."
    from thu_big_data_ml.propensity import _boot_means, _boot_means_many
    rng = np.random.default_rng(4)
    X = rng.random((3, 700)); w = rng.random(700) + 0.2
    for chunk in (64, 200):
        many = _boot_means_many(X, 450, 12345, W={2: w}, chunk=chunk)
        assert many.shape == (3, 450)
        np.testing.assert_allclose(many[0], _boot_means(X[0], 450, 12345, chunk=chunk), rtol=1e-12)
        np.testing.assert_allclose(many[1], _boot_means(X[1], 450, 12345, chunk=chunk), rtol=1e-12)
        np.testing.assert_allclose(many[2], _boot_means(X[2], 450, 12345, w, chunk=chunk), rtol=1e-12)
