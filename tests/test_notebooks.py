"""Notebook hygiene that nbdev_test cannot see: the report's IPython kernel overwrites its history names after every
cell (`_i`, `_ii`, `_iii`, `_iN`, `_oh`, `_ih`, `_dh`, `In`, `Out`), so a chapter must never keep
its own values under them (04's `_u, _i = ...` broke `make report` while passing `nbdev_test`)."""
import json
import re
from pathlib import Path

import pytest

NBS = sorted((Path(__file__).resolve().parents[1] / 'nbs').glob('*.ipynb'))
RESERVED = r'(?:_i|_ii|_iii|_i\d+|_oh|_ih|_dh|In|Out)'
ASSIGN = re.compile(rf'^\s*(?:[\w\s,]*,\s*)?{RESERVED}\s*(?:,[\w\s,]*)?=(?!=)', re.M)


@pytest.mark.parametrize('nb', NBS, ids=[p.stem for p in NBS])
def test_no_ipython_history_names_assigned(nb):
    for n, cell in enumerate(json.loads(nb.read_text(encoding='utf-8'))['cells']):
        if cell['cell_type'] == 'code':
            src = ''.join(cell['source'])
            m = ASSIGN.search(src)
            assert m is None, f'{nb.name} cell {n}: assigns an IPython history name: {m.group(0).strip()!r}'


def test_the_check_catches_the_04_case():
    assert ASSIGN.search('_u, _i = np.arange(3), np.arange(3)') and ASSIGN.search('_ii = 2')
    assert not ASSIGN.search('_it = 1') and not ASSIGN.search('x == _i')
    assert not ASSIGN.search('for _ in range(3): pass')
