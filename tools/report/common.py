"""What every stage of the report build shares: paths, errors and logging, settings, the chapter list, the
machine, cell directives, chapter metadata (title, summary, headline, datasets) and the colour of each method."""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REPORT_DIR = Path(__file__).resolve().parent   # site.css, site.js, browser_check.py
PDF_NAME = 'thu_big_data_ml_report.pdf'
PLOTLY_MIME = 'application/vnd.plotly.v1+json'
WIDGET_MIME = 'application/vnd.jupyter.widget-view+json'


class BuildError(RuntimeError):
    """A build step failed; the message says which notebook / cell / tool."""


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- settings & discovery

def read_settings(root: Path = ROOT) -> dict:
    """`<root>/settings.ini` as nbdev reads it (`nbdev.config.get_config`), or {} when there is none."""
    if not (root / 'settings.ini').exists():
        return {}
    import warnings

    from nbdev.config import get_config
    with warnings.catch_warnings():   # nbdev's notes on deprecated keys (cell_number) are not the report's business
        warnings.simplefilter('ignore', DeprecationWarning)
        return dict(get_config(path=root).d)


def chapter_notebooks(nbs: Path, only: list[str] | None = None) -> list[Path]:
    """Numbered notebooks `NN_*.ipynb` in order, with section notebooks `NNa_*.ipynb` after chapter NN (optionally
    only those whose name contains one of `only`)."""
    nbs_ = sorted(p for p in nbs.glob('[0-9][0-9]*.ipynb') if re.match(r'^\d\d[a-z]?[_-]', p.name))
    if only:
        nbs_ = [p for p in nbs_ if any(o in p.name for o in only)]
    return nbs_


def machine_description() -> str:
    """One line about the machine the build runs on (the kernels run here too)."""
    try:
        mem = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30
        mem_s = f', {mem:.0f} GiB RAM'
    except (ValueError, OSError, AttributeError):
        mem_s = ''
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    gpu = 'no GPU'
    if shutil.which('nvidia-smi'):
        try:
            names = subprocess.run(['nvidia-smi', '--query-gpu=name', '--format=csv,noheader'], capture_output=True,
                                   text=True, timeout=10).stdout.strip().splitlines()
            gpu = ', '.join(names) if names else gpu
        except Exception:
            pass
    return (f'{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores ({cpu}){mem_s}, {gpu}, '
            f'Python {platform.python_version()}')


# ----------------------------------------------------------------------------- reading chapters

def cell_directives(source: str) -> dict[str, str]:
    """`#| key: value` / `#| key` lines at the top of a cell, as a dict (keys lower-case): nbdev's own parser
    (`nbdev.process.extract_directives`), so the report reads a cell's directives exactly as nbdev_export does."""
    from fastcore.basics import AttrDict
    from nbdev.process import extract_directives
    found = extract_directives(AttrDict(source=source), remove=False)
    return {k.rstrip(':').lower(): ' '.join(v) for k, v in found.items()}


def strip_directives(source: str) -> str:
    """The cell's code without its leading `#|` lines (and blank lines), as shown in the report."""
    from nbdev.process import first_code_ln
    lines = source.splitlines()
    first = first_code_ln(lines)
    return '\n'.join(lines[first:]).rstrip() if first is not None else ''


def is_export_cell(cell) -> bool:
    """Whether nbdev exports the cell to the package (`#| export`, `#| exports`, `#| exporti`)."""
    return any(k in cell_directives(cell.source) for k in ('export', 'exports', 'exporti'))


def cell_visibility(cell) -> tuple[bool, bool]:
    """(show code, show outputs) for a code cell."""
    d = cell_directives(cell.source)
    if 'hide' in d or d.get('include') == 'false' or 'exporti' in d:
        return False, False
    return d.get('echo') != 'false' and 'hide_input' not in d, d.get('output') != 'false' and 'hide_output' not in d


def _text(x) -> str:
    return ''.join(x) if isinstance(x, list) else (x or '')


def chapter_meta(nb, path: Path) -> dict:
    """Title, summary and headline of a chapter."""
    title, summary, headline = None, '', ''
    for cell in nb.cells:
        if cell.cell_type == 'markdown':
            m = re.search(r'^#\s+(.+)$', cell.source, re.M)
            if m:
                title = m.group(1).strip()
                # the summary is the first block quote, over one or more `> ` lines (nbdev makes the module
                # docstring from its first line only, so long summaries wrap after their first sentence)
                s = re.search(r'^>[ \t]*(.+(?:\n>[ \t]*.+)*)', cell.source[m.end():], re.M)
                summary = ' '.join(ln.lstrip('>').strip() for ln in s.group(1).splitlines()) if s else ''
                break
    for cell in nb.cells:
        if cell.cell_type == 'code' and cell_directives(cell.source).get('report') == 'headline':
            headline = outputs_as_markdown(cell.get('outputs', []))
    stem = path.stem
    return {'title': title or re.sub(r'^\d+[_-]', '', stem).replace('_', ' ').capitalize(),
            'summary': summary, 'headline': headline.strip(), 'stem': stem, 'number': int(stem[:2])}


def outputs_as_markdown(outputs) -> str:
    parts = []
    for o in outputs:
        if o.get('output_type') == 'stream' and o.get('name') == 'stdout':
            parts.append(_text(o.get('text')))
        elif o.get('output_type') in ('display_data', 'execute_result'):
            d = o.get('data', {})
            if 'text/markdown' in d:
                parts.append(_text(d['text/markdown']))
            elif 'text/plain' in d:
                parts.append(_text(d['text/plain']).strip("'\""))
    return '\n'.join(p.strip() for p in parts if p.strip())


def describe_machine(info: dict, fallback: str) -> str:
    """The machine a chapter ran on: the build machine plus the versions the kernel reported."""
    m = info.get('machine')
    if isinstance(m, dict):
        vers = ', '.join(f'{k} {m[k]}' for k in ('numpy', 'scipy', 'torch', 'jax') if k in m)
        return f'{fallback}' + (f'; {vers}' if vers else '')
    return str(m) if m else fallback


def describe_datasets(info: dict, detail: bool = True) -> str:
    """Which datasets a chapter used (as detected in its kernel), with sizes when `detail`."""
    ds = info.get('datasets') or []
    if not ds:
        return 'none detected'
    label = {'course': 'real course files', 'generated': 'generated Netflix-shaped data', 'movielens': 'real MovieLens'}
    out = []
    for d in ds:
        size = ''
        if detail and d.get('n_users') and d.get('n_items'):
            size = f", {d['n_users']:,} users x {d['n_items']:,} items"
            if d.get('n_train'):
                test = f" / {d['n_test']:,} test" if d.get('n_test') else ''
                size += f", {d['n_train']:,} train{test} ratings"
        out.append(f"{d['name']} ({label.get(d['source'], d['source'])}{size})")
    return '; '.join(out)


# One colour per method in every chapter's figures (issue 17: "consistent colours for a method across chapters").
# Trace names are matched case-insensitively after stripping; traces of other names keep plotly's colours.
METHOD_COLOURS = {
    'cf': '#7f7f7f', 'cosine cf': '#7f7f7f', 'user cf': '#7f7f7f', 'item cf': '#bcbd22',
    'mf': '#1f77b4', 'biased mf': '#d62728', 'time-aware mf': '#9467bd', 'bayesian mf': '#2ca02c',
    'fm': '#17becf', 'bayesian fm': '#17becf', 'autorec': '#ff7f0e', 'i-autorec': '#ff7f0e',
    'gd': '#1f77b4', 'adam': '#ff7f0e', 'als': '#2ca02c',
    'numba': '#1f77b4', 'jax': '#9467bd', 'torch': '#d62728', 'pytorch': '#d62728',
    'surprise svd': '#8c564b', 'surprise svd++': '#e377c2', 'tpe': '#2ca02c', 'random': '#7f7f7f',
}


_COLOURED_PARTS = {'scatter': ('line', 'marker'), 'scattergl': ('line', 'marker'), 'bar': ('marker',),
                   'box': ('line', 'marker'), 'violin': ('line', 'marker'), 'histogram': ('marker',)}


def recolour(spec: dict) -> dict:
    """A copy of a plotly figure spec whose traces named after a known method get that method's colour."""
    data = spec.get('data')
    if not isinstance(data, list):
        return spec
    out = dict(spec)
    out['data'] = []
    for tr in data:
        c = METHOD_COLOURS.get(str(tr.get('name', '')).strip().lower()) if isinstance(tr, dict) else None
        parts = _COLOURED_PARTS.get(tr.get('type', 'scatter')) if c is not None else None
        if not parts:
            out['data'].append(tr)
            continue
        tr = dict(tr)
        for part in parts:
            v = dict(tr.get(part) or {})
            if not isinstance(v.get('color'), (list, tuple, dict)):  # keep per-point colour arrays
                v['color'] = c
            tr[part] = v
        out['data'].append(tr)
    return out

