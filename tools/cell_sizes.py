"""Sizes of the export cells in nbs/ (issue 18: median at most 15 lines, none over 60).

    python tools/cell_sizes.py            # summary + the cells over the limit
    python tools/cell_sizes.py --max 60   # exit 1 when a cell is longer than --max lines
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def export_cells(nbs: Path):
    "Yield (notebook, cell index, lines of code) for every `#| export` / `#| exporti` cell (directive lines excluded)."
    for p in sorted(nbs.glob('*.ipynb')):
        for i, c in enumerate(json.loads(p.read_text(encoding='utf-8'))['cells']):
            if c['cell_type'] != 'code': continue
            lines = ''.join(c['source']).splitlines()
            if not any(l.strip().startswith(('#| export', '#|export')) for l in lines[:3]): continue
            body = [l for l in lines if l.strip() and not l.lstrip().startswith('#|')]
            yield p.name, i, len(body)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--nbs', default=str(ROOT / 'nbs'))
    ap.add_argument('--max', type=int, default=60, help='longest allowed export cell (non-blank lines)')
    ap.add_argument('--median', type=float, default=15, help='target median')
    a = ap.parse_args(argv)
    cells = list(export_cells(Path(a.nbs)))
    if not cells: print('no export cells'); return 0
    sizes = [n for *_, n in cells]
    over = sorted([c for c in cells if c[2] > a.max], key=lambda c: -c[2])
    print(f'export cells: {len(cells)}; median {statistics.median(sizes):.0f} lines (target <= {a.median:g}); '
          f'longest {max(sizes)}; over {a.max}: {len(over)}')
    per_nb = {}
    for nb, _, n in cells: per_nb.setdefault(nb, []).append(n)
    for nb, ns in per_nb.items():
        print(f'  {nb:40s} {len(ns):3d} cells  median {statistics.median(ns):5.0f}  max {max(ns):4d}  '
              f'over: {sum(n > a.max for n in ns)}')
    for nb, i, n in over[:30]: print(f'  over: {nb} cell {i}: {n} lines')
    return 1 if over else 0


if __name__ == '__main__':
    sys.exit(main())
