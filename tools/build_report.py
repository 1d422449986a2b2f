"""Build the report: execute the numbered notebooks, render an HTML site and one PDF, check them in a browser.

    python tools/build_report.py                 # what `make report` runs
    python tools/build_report.py --only 02 --no-pdf
    python tools/build_report.py --nbs DIR --site DIR --build DIR   # any notebook folder (the tests use this)

With `quarto` on PATH the report is rendered by Quarto (`nbs/_quarto.yml`, a book: HTML site + one
typst PDF). Without it (these machines) the fallback uses standard tools:

1. nbclient executes every `NN_*.ipynb` in order in a fresh kernel (cwd = the notebook folder,
   plotly figures as JSON). An error stops the build naming notebook, cell and exception. Executed
   notebooks are cached with joblib, keyed by the notebook, the package sources and the course data
   files, so a second run only re-executes what changed (`--force` re-executes everything).
2. HTML: one page per chapter + an index (title, abstract, chapter table with one-line summaries and
   headline results, dataset and machine), navigation, foldable code, plotly interactive from one
   local `plotly.min.js`, MathJax 2 (SVG output) copied from Debian's `libjs-mathjax`. No CDN.
3. PDF: the same chapters as Markdown -> pandoc -> typst -> PDF (title page, contents, numbered
   sections); plotly figures exported to PNG with kaleido + Chromium, cached by content.
4. Headless Chromium opens the index and one chapter, checks plots drew, math typeset and no network
   request failed, and saves screenshots in `<site>/_checks/`.

Chapter conventions read by the build (all optional):
- the first markdown cell is `# Title` followed by `> one-line summary` (nbdev style);
- a cell whose first line is `#| report: headline` produces the chapter's headline result (its
  Markdown / printed output is shown on the index);
- `#| hide` hides a cell, `#| echo: false` hides its code, `#| output: false` its outputs;
  other `#|` lines are removed from the displayed code.
Which dataset a chapter used is read from the kernel after the notebook ran (every `RatingData`
in the notebook's globals: its `name` and `source`).
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import html
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from configparser import ConfigParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT_DIR = Path(__file__).resolve().parent / 'report'   # site.css, site.js, browser_check.py
sys.path.insert(0, str(REPORT_DIR))
MATHJAX_SRC = Path('/usr/share/javascript/mathjax')
PDF_NAME = 'thu_big_data_ml_report.pdf'
INFO_MARK = '# __report_info__ (added by tools/build_report.py, removed after execution)'
PLOTLY_MIME = 'application/vnd.plotly.v1+json'
WIDGET_MIME = 'application/vnd.jupyter.widget-view+json'

# Runs in the kernel before the chapter: note every dataset (`RatingData`) the chapter creates or loads, and after
# every cell each one in the namespace, so a dataset counts even when the chapter drops or overwrites it. Nothing
# is added to the chapter's namespace.
WATCH_CELL = INFO_MARK + r'''
import warnings as __w   # tqdm's notebook-widget notice names the build machine's site-packages: not report content
__w.filterwarnings('ignore', message='IProgress not found')
del __w
def __report_install():
    import sys, types
    rep = types.ModuleType('__report__')
    rep.seen = {}
    def describe(v):
        if type(v).__name__ != 'RatingData' or not hasattr(v, 'source'):
            return None
        def size(x):
            try:
                return len(x)
            except Exception:
                return None
        return {'name': str(getattr(v, 'name', '?')), 'source': str(v.source), 'n_users': getattr(v, 'n_users', None),
                'n_items': getattr(v, 'n_items', None), 'n_train': size(getattr(v, 'train', None)),
                'n_test': size(getattr(v, 'test', None))}
    def note(v):
        d = describe(v)
        if d:
            rep.seen[(d['name'], d['source'])] = d
    def watch(*_):
        try:
            for v in list(get_ipython().user_ns.values()):
                note(v)
                if isinstance(v, dict) and len(v) < 100:
                    for w in list(v.values()):
                        note(w)
        except Exception:
            pass
    rep.note, rep.watch = note, watch
    rep.live = []  # [weak reference, description]: kept up to date as the object's fields are set
    sys.modules['__report__'] = rep
    try:  # datasets that never reach the namespace (temporaries, inside functions, unpickled from caches)
        import weakref
        import thu_big_data_ml.data as data_module
        cls = data_module.RatingData
        def update(obj):  # keep only the latest description of each object (fields change after creation)
            d = describe(obj)
            if not d:
                return
            for rec in rep.live:
                if rec[0]() is obj:
                    rec[1] = d
                    return
            try:
                rep.live.append([weakref.ref(obj), d])
            except TypeError:
                pass
        def setattr_(self, k, v):
            object.__setattr__(self, k, v)
            if k in ('name', 'source', 'train', 'test'):
                update(self)
        def setstate(self, state):
            state = state[0] if isinstance(state, tuple) else state
            self.__dict__.update(state or {})
            update(self)
        if '__setattr__' not in cls.__dict__:
            cls.__setattr__ = setattr_
        if '__setstate__' not in cls.__dict__:
            cls.__setstate__ = setstate
    except Exception:
        pass
    get_ipython().events.register('post_run_cell', watch)
__report_install()
del __report_install
'''

# Runs in the kernel after the chapter: which datasets it used and where it ran.
INFO_CELL = INFO_MARK + r'''
def __report_info():
    import gc, json, sys
    rep = sys.modules.get('__report__')
    if rep is not None:
        for v in gc.get_objects():  # live datasets outside the namespace too
            try:
                rep.note(v)
            except Exception:
                pass
    found = dict(rep.seen) if rep is not None else {}
    for _, d in (rep.live if rep is not None else []):
        found.setdefault((d['name'], d['source']), d)
    machine = None
    try:
        from thu_big_data_ml.core import machine_info
        machine = machine_info()
    except Exception:
        pass
    scale = globals().get('SCALE')
    print(json.dumps({'datasets': [found[k] for k in sorted(found)],
                      'machine': machine, 'scale': scale if isinstance(scale, str) else None}, default=str))
__report_info()
del __report_info
'''


class BuildError(RuntimeError):
    """A build step failed; the message says which notebook / cell / tool."""


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- settings & discovery

def read_settings(root: Path = ROOT) -> dict:
    cfg = ConfigParser(delimiters=['='])
    cfg.read(root / 'settings.ini', encoding='utf-8')
    return dict(cfg['DEFAULT']) if cfg.has_section('DEFAULT') or cfg.defaults() else {}


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


# ----------------------------------------------------------------------------- execution (nbclient + joblib)

_PKG_IMPORT = re.compile(r'(?:from|import)\s+(?:thu_big_data_ml\.|\.)(\w+)'
                         r'|from\s+thu_big_data_ml\s+import\s+([\w, ()]+)')


def _imported_modules(text: str) -> set[str]:
    out = set()
    for a, b in _PKG_IMPORT.findall(text):
        out |= {a} if a else {m.strip(' ()') for m in b.split(',')}
    return {m for m in out if m}


def fingerprint(root: Path, nb_text: str) -> str:
    """Hash of what an executed notebook depends on besides its own source: the package modules it imports
    (transitively), the bench scripts and bench results files it names (a new `make bench-x` result re-executes the
    chapter that reads it) and the course data files. Other chapters' modules do not invalidate its cache."""
    pkg = root / 'thu_big_data_ml'
    mods = {p.stem: p.read_text(encoding='utf-8') for p in pkg.glob('*.py') if not p.name.startswith('_')}
    todo, need = list(_imported_modules(nb_text)), set()
    while todo:
        m = todo.pop()
        if m in mods and m not in need:
            need.add(m)
            todo.extend(_imported_modules(mods[m]))
    h = hashlib.sha256()
    for m in sorted(need):
        h.update(m.encode() + b'\0' + mods[m].encode())
    for p in sorted((root / 'bench').glob('bench_*.py')):  # a bench the chapter runs: its script is code it depends on
        if p.name in nb_text or f"'{p.stem}'" in nb_text:
            h.update(p.name.encode() + b'\0' + p.read_bytes())
    results = Path(os.environ.get('THU_BDML_RESULTS') or root / 'bench' / 'results')
    for p in sorted(results.glob('*.json')) if results.is_dir() else ():  # a results file the chapter reads by name
        if f"'{p.stem}'" in nb_text or f'"{p.stem}"' in nb_text or f'{p.stem}.json' in nb_text:
            h.update(p.name.encode() + b'\0' + hashlib.sha256(p.read_bytes()).digest())
    data = root / 'data' / 'netflix'
    if data.is_dir():  # real course files change which data every chapter uses
        for p in sorted(data.iterdir()):
            if p.is_file():
                st = p.stat()
                h.update(f'{p.name}:{st.st_size}:{int(st.st_mtime)}'.encode())
    return h.hexdigest()[:16]


def _execute(nb_json: str, nb_name: str, cwd: str, deps: str, timeout: int, failed_dir: str = '',
             positions: list[int] | None = None) -> dict:
    """Execute one notebook in a fresh kernel; return the executed notebook (as JSON text), info and timing.

    `deps` is only part of the joblib cache key. Raises BuildError naming the cell on failure.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.reads(nb_json, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(WATCH_CELL))  # cell indices below are shifted back by one
    nb.cells.append(nbformat.v4.new_code_cell(INFO_CELL))
    current = {'index': None, 't0': time.monotonic()}
    slow: list[str] = []
    pos = lambda j: positions[j] if positions and 0 <= j < len(positions) else j   # index in the full notebook

    def on_cell_execute(cell, cell_index, **_):
        current['index'], current['t0'] = cell_index, time.monotonic()

    def on_cell_executed(cell, cell_index, **_):  # noqa: ARG001
        took = time.monotonic() - current['t0']
        if took > 20 and 0 < cell_index < len(nb.cells) - 1:
            line = f'      cell {pos(cell_index - 1)} took {took:.1f} s: {_first_line(cell.source)}'
            slow.append(line)
            log(line)

    client = NotebookClient(nb, timeout=timeout, kernel_name='python3', allow_errors=False,
                            resources={'metadata': {'path': cwd}}, on_cell_execute=on_cell_execute,
                            on_cell_executed=on_cell_executed)
    t0 = time.monotonic()
    logs = Path(failed_dir or cwd) / 'logs'
    logs.mkdir(parents=True, exist_ok=True)
    kernel_log = logs / f'{nb_name}.kernel-stderr.txt'  # the kernel process's own stderr (not cell output)
    try:
        with open(kernel_log, 'w') as err:
            client.execute(stderr=err)
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
        i = current['index']
        cell = nb.cells[i] if i is not None and i < len(nb.cells) else None
        err = next((o for o in (cell.outputs if cell is not None else []) if o.get('output_type') == 'error'), None)
        last = str(e).strip().splitlines()[-1] if str(e).strip() else ''
        what = f"{err['ename']}: {err['evalue']}" if err else f'{type(e).__name__}: {last}'
        nb.cells.pop(0)
        if nb.cells and nb.cells[-1].source.startswith(INFO_MARK):
            nb.cells.pop()
        i = None if i is None else pos(i - 1)
        where = f'cell {i} (first line: {_first_line(cell.source)!r})' if cell is not None else 'unknown cell'
        raise BuildError(f'{nb_name}: {where} failed: {what}\n  (executed notebook with the traceback: '
                         f'{_save_failed(nb, Path(failed_dir or cwd) / "failed", nb_name)}; kernel log: {kernel_log})'
                         ) from None
    seconds = time.monotonic() - t0
    info_cell = nb.cells.pop()
    nb.cells.pop(0)
    info = {}
    for o in info_cell.get('outputs', []):
        if o.get('output_type') == 'stream' and o.get('name') == 'stdout':
            try:
                info = json.loads(o['text'].strip().splitlines()[-1])
            except (ValueError, IndexError):
                pass
    info.update(seconds=round(seconds, 1), executed_at=dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC'))
    return {'nb': nbformat.writes(nb), 'info': info}


def _save_failed(nb, folder: Path, name: str) -> str:
    import nbformat
    try:
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, folder / name)
        return str(folder / name)
    except OSError:
        return '(could not save)'


def _first_line(src: str) -> str:
    lines = [ln for ln in src.splitlines() if ln.strip() and not ln.startswith('#|')]
    return (lines[0][:70] if lines else '').strip()


def without_slow_cells(nb_text: str) -> str:
    """The notebook without its `#| slow` cells (test mode, as nbdev_test runs it)."""
    import nbformat
    nb = nbformat.reads(nb_text, as_version=4)
    nb.cells = [c for c in nb.cells if not (c.cell_type == 'code' and 'slow' in cell_directives(c.source))]
    return nbformat.writes(nb)


def code_view(nb_text: str) -> tuple[str, list[int]]:
    """The notebook with only its code cells (what execution depends on) and their positions in the full notebook.
    Editing a markdown cell leaves this unchanged, so the chapter re-renders without re-executing."""
    import nbformat
    nb = nbformat.reads(nb_text, as_version=4)
    keep = [k for k, c in enumerate(nb.cells) if c.cell_type == 'code']
    nb.cells = [nb.cells[k] for k in keep]
    for j, c in enumerate(nb.cells):        # ids and metadata do not change what runs: fixed ids, no metadata
        c.id = f'code-{j}'; c.metadata = {}; c.outputs = []; c.execution_count = None
    nb.metadata = {}
    return nbformat.writes(nb), keep


def merge_executed(executed_code_nb: str, nb_text: str) -> str:
    """The current notebook (markdown as it is now) with the outputs of the executed code cells, in order."""
    import nbformat
    ex = nbformat.reads(executed_code_nb, as_version=4)
    nb = nbformat.reads(nb_text, as_version=4)
    code = [c for c in nb.cells if c.cell_type == 'code']
    if len(code) != len(ex.cells):
        raise BuildError(f'executed notebook has {len(ex.cells)} code cells, the source {len(code)}')
    for c, e in zip(code, ex.cells):
        c.outputs, c.execution_count = e.get('outputs', []), e.get('execution_count')
    return nbformat.writes(nb)


def read_budgets(nbs: Path) -> dict[str, float]:
    """Per-chapter time budgets in seconds (fresh machine, full scale, 2 cores) from `<nbs>/_budgets.json`:
    keys are notebook stems (e.g. `03_matrix_factorization`) or their two-digit prefix; `_total` is the whole build."""
    p = nbs / '_budgets.json'
    if not p.exists():
        return {}
    try:
        return {k: float(v) for k, v in json.loads(p.read_text(encoding='utf-8')).items() if not k.startswith('#')}
    except (ValueError, TypeError, AttributeError) as e:
        raise BuildError(f'{p}: not a JSON object of seconds ({e})') from None


def budget_of(budgets: dict[str, float], stem: str) -> float | None:
    return budgets.get(stem, budgets.get(stem[:2]))


def _mmss(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f'{m}:{s:02d}'


def summary_table(records: list[dict], budgets: dict[str, float], total: float) -> list[str]:
    """The build's closing table: chapter, executed or cached, time, budget, verdict."""
    rows = [f'{"chapter":32} {"status":9} {"time":>8} {"budget":>8}  verdict']
    for r in records:
        b = budget_of(budgets, r['path'].stem)
        t = r['info'].get('seconds', 0.0)   # execution time (of the run that made the cached result, when cached)
        verdict = '' if b is None else ('ok' if t <= b else f'OVER by {t - b:.0f} s')
        rows.append(f'{r["path"].stem:32} {r["status"]:9} {t:8.1f} {"" if b is None else f"{b:8.0f}":>8}  {verdict}')
    tb = budgets.get('_total')
    ex = sum(r['info'].get('seconds', 0.0) for r in records)
    rows.append(f'{"all chapters (execution)":32} {"":9} {ex:8.1f} {"" if tb is None else f"{tb:8.0f}":>8}  '
                + ('' if tb is None else ('ok' if ex <= tb else f'OVER by {ex - tb:.0f} s')))
    rows.append(f'{"this build (wall clock)":32} {"":9} {total:8.1f}')
    return rows


def execute_all(notebooks: list[Path], build: Path, root: Path, force: bool, timeout: int,
                skip_slow: bool = False, budgets: dict[str, float] | None = None) -> list[dict]:
    """Execute the notebooks in order (cached by their code cells and package code); return one record per chapter."""
    from joblib import Memory
    mem = Memory(location=str(build / 'cache'), verbose=0)
    cached_execute = mem.cache(_execute, ignore=['nb_name', 'failed_dir', 'positions'])
    os.environ['PLOTLY_RENDERER'] = 'plotly_mimetype'  # figures stay JSON; the site ships plotly.js once
    os.environ.setdefault('PYDEVD_DISABLE_FILE_VALIDATION', '1')
    os.environ['THU_BIG_DATA_ML_REPORT'] = '1'
    # idle OpenMP (numba) workers sleep instead of spinning on a shared machine
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    os.environ['THU_BDML_SCALE'] = 'small' if skip_slow else 'full'   # the kernels' scale, whatever the shell set
    out_dir = build / 'executed'
    out_dir.mkdir(parents=True, exist_ok=True)
    timings_p = build / ('timings-quick.json' if skip_slow else 'timings.json')
    try:
        last = json.loads(timings_p.read_text(encoding='utf-8'))
    except (OSError, ValueError):
        last = {}
    budgets = budgets or {}
    records, total = [], time.monotonic()
    plan = []
    for path in notebooks:
        src = path.read_text(encoding='utf-8')
        if skip_slow:
            src = without_slow_cells(src)
        code, positions = code_view(src)
        deps = fingerprint(root, src) + hashlib.sha256((WATCH_CELL + INFO_CELL).encode()).hexdigest()[:8]
        args = (code, path.name, str(path.parent.resolve()), deps, timeout, str(build), positions)
        hit = cached_execute.check_call_in_cache(*args) and not force
        plan.append((path, src, args, hit))
    def left(k: int) -> str:
        "Estimate for the chapters still to execute: last build's time, else the budget; says what is unknown."
        guess = [last.get(p.stem, budget_of(budgets, p.stem)) for p, _, _, h in plan[k:] if not h]
        known = [g for g in guess if g is not None]
        if not known: return 'no earlier timings'
        s = f'about {_mmss(sum(known))} left'
        return s + (f' + {len(guess) - len(known)} chapters without timings' if len(known) < len(guess) else '')
    n_run = sum(not h for *_, h in plan)
    log(f'notebooks: {len(plan)} ({len(plan) - n_run} cached, {n_run} to execute'
        + (f'; {left(0)} by the last build\'s timings and the budgets' if n_run else '') + ')')
    for k, (path, src, args, hit) in enumerate(plan, 1):
        t0 = time.monotonic()
        if not hit:
            b = budget_of(budgets, path.stem)
            prev = last.get(path.stem)
            log(f'[{k}/{len(plan)}] {path.name}: executing (elapsed {_mmss(time.monotonic() - total)}, '
                f'last build {"-" if prev is None else _mmss(prev)}, budget {"-" if b is None else _mmss(b)}, '
                f'{left(k - 1)}) ...')
        if force:
            res = cached_execute.call(*args)  # re-executes and refreshes the cache
            res = res[0] if isinstance(res, tuple) else res
        else:
            res = cached_execute(*args)
        took = time.monotonic() - t0
        info = res['info']
        if hit:
            log(f'[{k}/{len(plan)}] {path.name}: cached ({took:.1f} s; executed {info["executed_at"]} '
                f'in {info["seconds"]:.1f} s)')
        else:
            log(f'[{k}/{len(plan)}] {path.name}: executed in {took:.1f} s')
            last[path.stem] = round(took, 1)
            try:
                timings_p.write_text(json.dumps(last, indent=1), encoding='utf-8')
            except OSError:
                pass
        (out_dir / path.name).write_text(merge_executed(res['nb'], src), encoding='utf-8')
        records.append({'path': path, 'executed': out_dir / path.name, 'info': info,
                        'status': 'cached' if hit else 'executed'})
    log(f'notebooks: {len(notebooks)} in {time.monotonic() - total:.1f} s')
    return records


# ----------------------------------------------------------------------------- reading chapters

_DIRECTIVE = re.compile(r'^\s*#\s*\|\s*(.*?)\s*$')


def cell_directives(source: str) -> dict[str, str]:
    """`#| key: value` / `#| key` lines at the top of a cell, as a dict (keys lower-case)."""
    out = {}
    for line in source.splitlines():
        m = _DIRECTIVE.match(line)
        if not m:
            if line.strip():
                break
            continue
        body = m.group(1)
        if ':' in body:
            k, v = body.split(':', 1)
        else:
            k, _, v = body.partition(' ')
        out[k.strip().lower()] = v.strip()
    return out


def strip_directives(source: str) -> str:
    lines = source.splitlines()
    while lines and (_DIRECTIVE.match(lines[0]) or not lines[0].strip()):
        lines.pop(0)
    return '\n'.join(lines).rstrip()


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


# ----------------------------------------------------------------------------- HTML site

def md2html(src: str) -> str:
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    return markdown2html_mistune(src)


def _has_math(s: str) -> bool:
    return bool(re.search(r'\$[^$\s][^$]*\$|\\\(|\\\[|\\begin\{', s))


def _highlight(code: str) -> str:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer
    return highlight(code, PythonLexer(), HtmlFormatter(nowrap=True))


def _ansi(text: str) -> str:
    from nbconvert.filters.ansi import ansi2html
    return ansi2html(text)


def _drop_noise(text: str) -> str:
    """stderr without tqdm's 'IProgress not found' warning (widgets are not used in the report)."""
    lines = text.splitlines(keepends=True)
    out, skip = [], False
    for ln in lines:
        if 'TqdmWarning: IProgress not found' in ln:
            skip = True
            continue
        if skip and ln.startswith(' ') and 'autonotebook' in ln:
            continue
        skip = False
        out.append(ln)
    return ''.join(out)


def _is_progress(text: str) -> bool:
    return '\r' in text or bool(re.search(r'\d+%\|', text))


class FigureCounter:
    def __init__(self):
        self.n = 0

    def next(self, stem: str) -> str:
        self.n += 1
        return f'{stem}-fig{self.n}'


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


def render_output_html(o, figs: FigureCounter, stem: str) -> str:
    t = o.get('output_type')
    if t == 'stream':
        text = _text(o.get('text'))
        if o.get('name') == 'stderr':
            text = _drop_noise(text)
            if _is_progress(text) or not text.strip():
                return ''
        cls = 'stderr' if o.get('name') == 'stderr' else 'stdout'
        return f'<pre class="output {cls}">{_ansi(text)}</pre>'
    if t == 'error':
        return f'<pre class="output error">{_ansi(chr(10).join(o.get("traceback", [])))}</pre>'
    d = o.get('data', {})
    if PLOTLY_MIME in d:
        fid = figs.next(stem)
        spec = json.dumps(recolour(d[PLOTLY_MIME])).replace('</', '<\\/')
        return (f'<div class="plotly-figure" id="{fid}"></div>'
                f'<script type="application/json" class="plotly-data" data-target="{fid}">{spec}</script>')
    if WIDGET_MIME in d and 'text/plain' in d and _is_progress(_text(d['text/plain'])):
        return ''
    if 'text/html' in d:
        h = _text(d['text/html'])
        if 'cdn.plot.ly' in h or 'cdn.jsdelivr' in h or 'require.config' in h:
            return '<p class="warn">(figure rendered with a CDN renderer; set PLOTLY_RENDERER=plotly_mimetype)</p>'
        return f'<div class="output html{" table" if "<table" in h else ""}">{h}</div>'
    for mime in ('image/png', 'image/jpeg'):
        if mime in d:
            return f'<img class="output" alt="figure" src="data:{mime};base64,{_text(d[mime]).strip()}">'
    if 'image/svg+xml' in d:
        return f'<div class="output svg">{_text(d["image/svg+xml"])}</div>'
    if 'text/markdown' in d:
        src = _text(d['text/markdown'])
        return f'<div class="output markdown"{" data-has-math" if _has_math(src) else ""}>{md2html(src)}</div>'
    if 'text/latex' in d:
        return f'<div class="output latex" data-has-math>{html.escape(_text(d["text/latex"]))}</div>'
    if 'text/plain' in d:
        return f'<pre class="output plain">{_ansi(_text(d["text/plain"]))}</pre>'
    return ''


def render_chapter_body(nb, stem: str) -> tuple[str, int]:
    """HTML of a chapter's cells; returns (html, number of plotly figures)."""
    figs, parts = FigureCounter(), []
    for cell in nb.cells:
        if cell.cell_type == 'markdown':
            src = cell.source
            parts.append(f'<section class="md"{" data-has-math" if _has_math(src) else ""}>{md2html(src)}</section>')
        elif cell.cell_type == 'code':
            show_code, show_out = cell_visibility(cell)
            code = strip_directives(cell.source)
            if not show_code and not show_out:
                continue
            block = ''
            if show_code and code:
                n = code.count('\n') + 1
                block += (f'<details class="code"><summary>code ({n} line{"s" * (n > 1)})</summary>'
                          f'<pre class="code highlight">{_highlight(code)}</pre></details>')
            if show_out:
                block += ''.join(render_output_html(o, figs, stem) for o in cell.get('outputs', []))
            if block:
                parts.append(f'<div class="cell">{block}</div>')
    return '\n'.join(parts), figs.n


MATHJAX_CONFIG = r"""<script type="text/x-mathjax-config">
MathJax.Hub.Config({ tex2jax: { inlineMath: [['$','$'], ['\\(','\\)']], displayMath: [['$$','$$'], ['\\[','\\]']],
  processEscapes: true, processEnvironments: true },
  SVG: { font: 'TeX', linebreaks: { automatic: true } }, showMathMenu: false, messageStyle: 'none',
  menuSettings: { zoom: 'None' } });
MathJax.Hub.Queue(function () { window.__mathjaxDone = true; });
</script>"""


def page_html(title: str, body: str, nav: str, assets: str, math: bool, plotly: bool, site_title: str,
              pdf_link: str | None) -> str:
    head = ['<meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">',
            f'<title>{html.escape(title)}</title>', f'<link rel="stylesheet" href="{assets}/site.css">',
            f'<script src="{assets}/site.js"></script>']
    if plotly:
        head.append(f'<script src="{assets}/plotly.min.js" charset="utf-8"></script>')
    if math:
        head.append(MATHJAX_CONFIG)
        head.append(f'<script src="{assets}/mathjax/MathJax.js?config=TeX-AMS_SVG-full"></script>')
    pdf = f'<a class="pdf" href="{pdf_link}">PDF</a>' if pdf_link else ''
    return f"""<!DOCTYPE html>
<html lang="en"><head>{''.join(head)}</head>
<body><header class="top"><a class="brand" href="index.html">{html.escape(site_title)}</a><span class="spacer"></span>
<button id="toggle-code" type="button">Show code</button>{pdf}</header>
<div class="layout">{nav}<main>{body}</main></div></body></html>
"""


def nav_html(chapters: list[dict], current: str | None) -> str:
    items = ''.join(f'<li><a href="{c["stem"]}.html"{" class=current" if c["stem"] == current else ""}>'
                    f'{html.escape(c["title"])}</a></li>' for c in chapters)
    home = ' class=current' if current is None else ''
    return f'<nav class="toc"><a href="index.html"{home}>Overview</a><ol>{items}</ol></nav>'


def copy_assets(site: Path, need_math: bool) -> dict:
    """Write css/js, plotly.min.js and (when installed) the MathJax subset into `site/assets`."""
    import plotly
    a = site / 'assets'
    a.mkdir(parents=True, exist_ok=True)
    for name in ('site.css', 'site.js'):
        shutil.copyfile(REPORT_DIR / name, a / name)
    pj = Path(plotly.__file__).parent / 'package_data' / 'plotly.min.js'
    if not (a / 'plotly.min.js').exists() or (a / 'plotly.min.js').stat().st_size != pj.stat().st_size:
        shutil.copyfile(pj, a / 'plotly.min.js')
    math_ok = False
    if need_math and (MATHJAX_SRC / 'MathJax.js').exists():
        dst = a / 'mathjax'
        if not (dst / 'MathJax.js').exists():
            for rel in ('MathJax.js', 'config/TeX-AMS_SVG-full.js', 'jax/input/TeX', 'jax/element',
                        'jax/output/SVG/jax.js', 'jax/output/SVG/config.js', 'jax/output/SVG/autoload',
                        'jax/output/SVG/fonts/TeX', 'extensions', 'localization/en'):
                s, d = MATHJAX_SRC / rel, dst / rel
                if s.is_dir():
                    shutil.copytree(s, d, dirs_exist_ok=True, symlinks=False)
                elif s.exists():
                    d.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(s, d)
        math_ok = True
    elif need_math:
        log('  MathJax not installed (Debian package libjs-mathjax): formulas will show as TeX source. '
            'Install: sudo apt-get install -y libjs-mathjax fonts-mathjax')
    return {'math': math_ok}


def build_site(records: list[dict], site: Path, settings: dict, machine: str, pdf_link: str | None,
               mode: str) -> list[dict]:
    import nbformat
    site.mkdir(parents=True, exist_ok=True)
    chapters = []
    for r in records:
        nb = nbformat.read(r['executed'], as_version=4)
        meta = chapter_meta(nb, r['path'])
        meta.update(info=r['info'], nb=nb, order=len(chapters) + 1)  # = the PDF's section number
        chapters.append(meta)
    assets = copy_assets(site, need_math=True)
    site_title = settings.get('report_title') or 'Low-rank recommender methods'
    pages = []
    for i, ch in enumerate(chapters):
        body, nfig = render_chapter_body(ch['nb'], ch['stem'])
        ch['figures'] = nfig
        info = ch['info']
        prev_ = (f'<a href="{chapters[i-1]["stem"]}.html">&larr; {html.escape(chapters[i-1]["title"])}</a>' if i
                 else '<a href="index.html">&larr; Overview</a>')
        next_ = (f'<a href="{chapters[i+1]["stem"]}.html">{html.escape(chapters[i+1]["title"])} &rarr;</a>'
                 if i + 1 < len(chapters) else '<span></span>')
        meta = (f'<div class="meta">Source: <code>nbs/{ch["stem"]}.ipynb</code>, '
                f'executed {info.get("executed_at", "?")} '
                f'in {info.get("seconds", 0):.1f} s{" (scale " + info["scale"] + ")" if info.get("scale") else ""}. '
                f'Data: {html.escape(describe_datasets(info))}. '
                f'Machine: {html.escape(describe_machine(info, machine))}.</div>')
        body += meta + f'<div class="pager">{prev_}{next_}</div>'
        out = site / f'{ch["stem"]}.html'
        out.write_text(page_html(ch['title'], body, nav_html(chapters, ch['stem']), 'assets', assets['math'],
                                 nfig > 0, site_title, pdf_link), encoding='utf-8')
        pages.append(out)
    # index
    abstract = settings.get('description', '')
    rows = ''.join(
        f'<tr><td>{c["order"]}</td><td><a href="{c["stem"]}.html">{html.escape(c["title"])}</a>'
        f'<br><span class="muted">{_inline_md(c["summary"])}</span></td>'
        f'<td data-has-math>{md2html(c["headline"]) if c["headline"] else "&mdash;"}</td>'
        f'<td>{html.escape(describe_datasets(c["info"], detail=False))}</td>'
        f'<td>{c["info"].get("seconds", 0):.0f} s</td></tr>'
        for c in chapters)
    total = sum(c['info'].get('seconds', 0) for c in chapters)
    index_intro = _index_intro(records)
    body = (f'<h1>{html.escape(site_title)}</h1>'
            + (f'<section class="md" data-has-math>{index_intro}</section>' if index_intro else
               f'<p class="abstract"><strong>Abstract.</strong> {html.escape(abstract)}</p>')
            + '<h2>Chapters</h2><table class="chapters"><thead><tr><th>#</th><th>Chapter</th><th>Headline result</th>'
            f'<th>Data</th><th>Run time</th></tr></thead><tbody>{rows}</tbody></table>'
            f'<div class="meta">Every figure and number in this report comes from executing the notebooks on '
            f'{dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")} ({total:.0f} s of execution in all). '
            f'Machine: {html.escape(machine)}. Rendered by {html.escape(mode)}.'
            + (f' <a href="{pdf_link}">The whole report as one PDF.</a>' if pdf_link else '') + '</div>')
    (site / 'index.html').write_text(page_html(site_title, body, nav_html(chapters, None), 'assets', assets['math'],
                                               False, site_title, pdf_link), encoding='utf-8')
    for ch in chapters:
        ch.pop('nb')
    log(f'HTML site: {site / "index.html"} ({len(pages)} chapter pages)')
    return chapters


def _inline_md(src: str) -> str:
    """Markdown of one line as inline HTML (no surrounding paragraph)."""
    h = md2html(src).strip()
    return h[3:-4] if h.startswith('<p>') and h.endswith('</p>') else h


def _index_intro(records: list[dict]) -> str:
    """The markdown of nbs/index.ipynb (without its first heading), if there is one."""
    if not records:
        return ''
    idx = records[0]['path'].parent / 'index.ipynb'
    if not idx.exists():
        return ''
    import nbformat
    nb = nbformat.read(idx, as_version=4)
    md = '\n\n'.join(c.source for c in nb.cells if c.cell_type == 'markdown')
    md = re.sub(r'^#\s+.+$', '', md, count=1, flags=re.M)
    return md2html(md)


# ----------------------------------------------------------------------------- PDF (pandoc -> typst)

def pandoc_path() -> str:
    p = shutil.which('pandoc')
    try:
        import pypandoc
        p = pypandoc.get_pandoc_path() or p
    except Exception:
        pass
    if not p:
        raise BuildError('pandoc not found: pip install pypandoc-binary (part of the dev requirements)')
    return p


def _html_table_to_md(h: str, pandoc: str) -> str:
    h = re.sub(r'<style.*?</style>', '', h, flags=re.S)
    r = subprocess.run([pandoc, '-f', 'html',
                        '-t', 'markdown-raw_html-native_divs-native_spans-fenced_divs-bracketed_spans'],
                       input=h, capture_output=True, text=True, timeout=60)
    return r.stdout if r.returncode == 0 else ''


def _fence(text: str, max_lines: int = 40) -> str:
    lines = text.rstrip('\n').splitlines()
    if len(lines) > max_lines:
        lines = lines[:max_lines // 2] + [f'... ({len(lines) - max_lines} lines omitted) ...'] + lines[-max_lines // 2:]
    text = '\n'.join(lines)
    fence = '````' if '```' in text else '```'
    return f'{fence}\n{text}\n{fence}'


def _strip_ansi(s: str) -> str:
    return re.sub(r'\x1b\[[0-9;]*[A-Za-z]', '', s)


_MATH = re.compile(r'(\$\$.+?\$\$|\$[^$\n]+?\$)', re.S)


def typst_friendly_math(md: str) -> str:
    """Inside math only: `\\|` (norm bars) -> `\\Vert`, which pandoc maps to typst's ‖ without relation spacing."""
    return _MATH.sub(lambda m: m.group(0).replace('\\|', '\\Vert '), md)


# Symbol names pandoc writes that newer typst releases dropped (typst 0.15: the `circle` modifier became `o`).
_TYPST_RENAMES = re.compile(r'\b(dot|plus|minus|times|div)\.circle\b')


def typst_compat(typ: str) -> str:
    """Rename symbols in pandoc's typst output that the installed typst no longer knows (`dot.circle` -> `dot.o`)."""
    return _TYPST_RENAMES.sub(r'\1.o', typ)


def is_export_cell(cell) -> bool:
    return any(k in cell_directives(cell.source) for k in ('export', 'exports', 'exporti'))


def chapter_markdown(nb, ch: dict, media: Path, fig_jobs: list, pandoc: str, pdf_code: str = 'analysis') -> str:
    """One chapter as pandoc Markdown; plotly figures are queued in `fig_jobs` as (spec, png path).

    `pdf_code`: 'all' code cells, 'analysis' (default: all but the exported library code, which the HTML
    site and the package show), or 'none'.
    """
    out, seen_title, nimg = [], False, 0
    for cell in nb.cells:
        if cell.cell_type == 'markdown':
            src = cell.source
            if not seen_title and re.search(r'^#\s+', src, re.M):
                seen_title = True
                src = re.sub(r'^(#\s+.+)$', r'\1', src, count=1, flags=re.M)
            elif seen_title:
                src = re.sub(r'^#(\s+)', r'##\1', src, flags=re.M)  # only one level-1 heading per chapter
            out.append(typst_friendly_math(src))
            continue
        if cell.cell_type != 'code':
            continue
        show_code, show_out = cell_visibility(cell)
        code = strip_directives(cell.source)
        if show_code and code and (pdf_code == 'all' or (pdf_code == 'analysis' and not is_export_cell(cell))):
            fenced = _fence(code, 60)
            out.append(fenced.replace('```\n', '```python\n', 1) if not code.startswith('`') else fenced)
        if not show_out:
            continue
        for o in cell.get('outputs', []):
            t = o.get('output_type')
            if t == 'stream':
                text = _strip_ansi(_text(o.get('text')))
                if o.get('name') == 'stdout' and text.strip():
                    out.append(_fence(text))
                continue
            if t not in ('display_data', 'execute_result'):
                continue
            d = o.get('data', {})
            if PLOTLY_MIME in d:
                spec = recolour(d[PLOTLY_MIME])
                key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]
                png = media / f'fig-{key}.png'
                fig_jobs.append((spec, png))
                nimg += 1
                out.append(f'![]({png.name}){{width=100%}}')
            elif 'image/png' in d or 'image/jpeg' in d:
                mime = 'image/png' if 'image/png' in d else 'image/jpeg'
                raw = base64.b64decode(_text(d[mime]))
                p = media / f'img-{hashlib.sha256(raw).hexdigest()[:20]}.{mime.split("/")[1]}'
                p.write_bytes(raw)
                nimg += 1
                out.append(f'![]({p.name}){{width=90%}}')
            elif 'image/svg+xml' in d:
                raw = _text(d['image/svg+xml']).encode()
                p = media / f'img-{hashlib.sha256(raw).hexdigest()[:20]}.svg'
                p.write_bytes(raw)
                nimg += 1
                out.append(f'![]({p.name}){{width=90%}}')
            elif 'text/markdown' in d:
                out.append(typst_friendly_math(_text(d['text/markdown'])))
            elif 'text/latex' in d:
                out.append(_text(d['text/latex']))
            elif 'text/html' in d and '<table' in _text(d['text/html']):
                md = _html_table_to_md(_text(d['text/html']), pandoc)
                out.append(md if md.strip() else _fence(_text(d.get('text/plain', ''))))
            elif 'text/plain' in d and WIDGET_MIME not in d:
                out.append(_fence(_strip_ansi(_text(d['text/plain']))))
    if not seen_title:
        out.insert(0, f'# {ch["title"]}')
    ch['pdf_images'] = nimg
    return '\n\n'.join(out)


def export_figures(jobs: list, have_chromium: bool) -> int:
    """PNG for every queued plotly figure that is not cached yet (one kaleido batch). Returns how many were made."""
    todo, seen = [], set()
    for spec, png in jobs:
        if not png.exists() and png not in seen:
            seen.add(png)
            todo.append((spec, png))
    if not todo:
        return 0
    if not have_chromium:
        _placeholder_pngs([p for _, p in todo])
        log(f'  {len(todo)} plotly figures replaced by placeholders: Chromium is missing (kaleido needs it). '
            'Install: sudo apt-get install -y chromium')
        return 0
    import plotly.io as pio
    figs, paths = [spec for spec, _ in todo], [str(png) for _, png in todo]
    t0 = time.monotonic()
    widths = [int(s.get('layout', {}).get('width') or 900) for s, _ in todo]
    heights = [int(s.get('layout', {}).get('height') or 500) for s, _ in todo]
    try:
        pio.write_images(figs, paths, format='png', width=widths, height=heights, scale=2)
    except TypeError:  # older plotly: one size for all
        pio.write_images(figs, paths, format='png', width=900, height=500, scale=2)
    log(f'  {len(todo)} plotly figures exported with kaleido in {time.monotonic() - t0:.1f} s')
    return len(todo)


def _placeholder_pngs(paths: list[Path]) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    for p in paths:
        fig, ax = plt.subplots(figsize=(6, 1.2))
        ax.axis('off')
        ax.text(0.5, 0.5, 'interactive figure: see the HTML report\n(static export needs Chromium)',
                ha='center', va='center')
        fig.savefig(p, dpi=100)
        plt.close(fig)


TYPST_HEADER = r"""
#show heading.where(level: 1): it => { pagebreak(weak: true); v(1em); it; v(0.5em) }
#show raw.where(block: true): set text(size: 7.5pt)
#show raw.where(block: true): it => block(fill: luma(246), inset: 6pt, radius: 3pt, width: 100%, it)
#show table: set text(size: 8pt)
#set table(stroke: 0.4pt + luma(180))
#show figure: set block(breakable: true)
"""


def _first_error(msg: str) -> str:
    return next((ln.strip() for ln in msg.splitlines() if ln.strip()), 'error')[:160].replace('*', '')


def _pandoc_typst(md_path: Path, typ: Path, pandoc: str, meta_path: Path | None, cwd: Path) -> None:
    args = [pandoc, str(md_path), '-f', 'markdown+tex_math_dollars+pipe_tables+grid_tables+raw_attribute',
            '-t', 'typst', '-o', str(typ)]
    if meta_path is not None:
        args += ['-s', '--metadata-file', str(meta_path), '-V', f'header-includes={TYPST_HEADER}']
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=cwd)
    if r.returncode != 0:
        raise BuildError(f'pandoc (markdown -> typst) failed:\n{r.stderr[-3000:]}')
    typ.write_text(typst_compat(typ.read_text(encoding='utf-8')), encoding='utf-8')


def _typeset(parts: list[str], work: Path, typ: Path, pdf_path: Path, pandoc: str, meta_path: Path) -> None:
    """All chapters -> one typst file -> PDF; BuildError naming the step that failed."""
    md_path = work / 'report.md'
    md_path.write_text('```{=typst}\n#pagebreak(weak: true)\n```\n\n' + '\n\n'.join(parts), encoding='utf-8')
    _pandoc_typst(md_path, typ, pandoc, meta_path, work)
    import typst
    try:
        typst.compile(str(typ), output=str(pdf_path), root=str(work))
    except Exception as e:
        raise BuildError(f'typst could not compile {typ.name}: {e}') from None


def typeset_chapters(parts: list[str], titles: list[str], work: Path, typ: Path, pdf_path: Path, pandoc: str,
                     meta_path: Path) -> list[str]:
    """Typeset all chapters into one PDF. A chapter that pandoc/typst cannot typeset alone is replaced by a note
    (the HTML site has it) with a warning, instead of failing the whole PDF. Returns the titles replaced."""
    try:
        _typeset(parts, work, typ, pdf_path, pandoc, meta_path)
        return []
    except BuildError as e:
        err = str(e)
        bad = [i for i, part in enumerate(parts) if not _typesets(part, work, pandoc, meta_path)]
        if not bad:
            raise
    parts = list(parts)
    for i in bad:
        log(f'WARNING PDF: chapter "{titles[i]}" could not be typeset ({_first_error(err)}); its PDF section is a '
            'note, the HTML site has it in full')
        parts[i] = (f'# {titles[i]}\n\n*This chapter could not be typeset for the PDF by this build '
                    f'(typst: {_first_error(err)}); read it on the HTML site.*')
    _typeset(parts, work, typ, pdf_path, pandoc, meta_path)
    return [titles[i] for i in bad]


def _typesets(part: str, work: Path, pandoc: str, meta_path: Path | None = None) -> bool:
    """Whether one chapter alone goes through pandoc and typst (used to find the chapter that broke the PDF)."""
    import typst
    one = work / '_one_chapter.md'
    one.write_text(part, encoding='utf-8')
    try:
        _pandoc_typst(one, work / '_one_chapter.typ', pandoc, meta_path, work)
        typst.compile(str(work / '_one_chapter.typ'), output=str(work / '_one_chapter.pdf'), root=str(work))
        return True
    except Exception:
        return False


def build_pdf(records: list[dict], chapters: list[dict], build: Path, pdf_path: Path, settings: dict, machine: str,
              have_chromium: bool, pdf_code: str = 'analysis') -> Path:
    import nbformat
    pandoc = pandoc_path()
    work = build / 'pdf'
    work.mkdir(parents=True, exist_ok=True)
    media = build / 'cache' / 'figures'
    media.mkdir(parents=True, exist_ok=True)
    parts, jobs = [], []
    for r, ch in zip(records, chapters):
        nb = nbformat.read(r['executed'], as_version=4)
        parts.append(chapter_markdown(nb, ch, media, jobs, pandoc, pdf_code))
    export_figures(jobs, have_chromium)
    for f in media.iterdir():  # typst only reads files below its root
        dst = work / f.name
        if not dst.exists():
            shutil.copyfile(f, dst)
    title = settings.get('report_title') or 'Low-rank recommender methods'
    when = dt.datetime.now(dt.UTC).strftime('%Y-%m-%d')
    prov_rows = '\n'.join(f'| {c["order"]} | {c["title"]} | {describe_datasets(c["info"], detail=False)} '
                          f'| {c["info"].get("seconds", 0):.0f} s |' for c in chapters)
    code_note = (' Library code (cells exported to the package) is omitted here; the HTML site shows it.'
                 if pdf_code == 'analysis' else '')
    front = (f'**Provenance.** Every figure and number in this report comes from executing the notebooks on {when} '
             f'on: {machine}.{code_note}\n\n| # | Chapter | Data | Run time |\n|---|---|---|---|\n{prov_rows}\n\n'
             '```{=typst}\n#pagebreak()\n```\n')
    meta = {'title': title, 'subtitle': 'thu_big_data_ml: a literate, reproducible laboratory',
            'author': [settings.get('author', '')], 'date': when, 'abstract': settings.get('description', ''),
            'abstract-title': 'Abstract', 'toc': True, 'toc-depth': 2, 'section-numbering': '1.1',
            'page-numbering': '1', 'papersize': 'a4', 'fontsize': '10pt', 'margin': {'x': '2cm', 'y': '2cm'},
            'include-before': [front]}
    meta_path = work / 'meta.json'
    # pandoc reads metadata files as YAML; JSON is YAML
    meta_path.write_text(json.dumps(meta), encoding='utf-8')
    typ = work / 'report.typ'
    t0 = time.monotonic()
    typeset_chapters(parts, [c['title'] for c in chapters], work, typ, pdf_path, pandoc, meta_path)
    log(f'PDF: {pdf_path} ({pdf_path.stat().st_size / 2**20:.1f} MiB, pandoc+typst {time.monotonic() - t0:.1f} s)')
    return pdf_path


# ----------------------------------------------------------------------------- Quarto path

def build_with_quarto(root: Path, nbs: Path, site: Path) -> None:
    """`quarto render` of the book in nbs/_quarto.yml, after nbdev processes the notebooks into _proc/."""
    import yaml
    log('quarto found on PATH: rendering with Quarto (nbs/_quarto.yml); the standard-tools fallback is not used')
    bin_ = Path(sys.executable).parent
    subprocess.run([str(bin_ / 'nbdev_proc_nbs')], cwd=root, check=True)
    proc = root / '_proc'
    qy = proc / '_quarto.yml'
    conf = yaml.safe_load(qy.read_text(encoding='utf-8'))
    chapters = [p.name for p in chapter_notebooks(proc)]  # keep the book in sync with the notebooks present
    conf.setdefault('book', {})['chapters'] = (['index.ipynb'] if (proc / 'index.ipynb').exists() else []) + chapters
    conf.setdefault('project', {})['output-dir'] = os.path.relpath(site, proc)
    qy.write_text(yaml.safe_dump(conf, sort_keys=False), encoding='utf-8')
    # html: plotly.js embedded in the page (no CDN); png: the static image Quarto puts in the typst PDF
    os.environ.setdefault('PLOTLY_RENDERER', 'notebook+png')
    r = subprocess.run(['quarto', 'render', str(proc), '--execute'], cwd=root)
    if r.returncode != 0:
        raise BuildError('quarto render failed (see its output above)')
    log(f'Quarto rendered the book to {site}')


# ----------------------------------------------------------------------------- browser check

def browser_check(site: Path, chapters: list[dict], strict: bool) -> bool:
    from browser_check import INSTALL_HINT, check_pages, find_chromium
    if not find_chromium():
        log(f'browser check skipped: Chromium not found. Install: {INSTALL_HINT}')
        return not strict
    with_fig = next((c for c in chapters if c.get('figures')), chapters[0] if chapters else None)
    pages = [site / 'index.html'] + ([site / f'{with_fig["stem"]}.html'] if with_fig else [])
    t0 = time.monotonic()
    reports = check_pages(pages, site / '_checks')
    ok = True
    for rep in reports:
        probs = rep.problems()
        p = rep.probe
        log(f"browser check {'ok' if not probs else 'FAILED'}: {Path(rep.url).name}: {p.get('plotly_svgs', 0)}/"
            f"{p.get('plotly_divs', 0)} plots drawn, {p.get('math_rendered', 0)} formulas typeset, "
            f"{len(rep.requests)} local requests, {len(rep.failed_requests)} failed; screenshot {rep.screenshot}")
        for pr in probs:
            log(f'    {pr}')
        ok &= not probs
    log(f'browser check took {time.monotonic() - t0:.1f} s')
    return ok


# ----------------------------------------------------------------------------- main

def headline_changes(old: list[dict], new: list[dict]) -> list[str]:
    """Lines naming each chapter whose headline differs from the previous build's (numbers moved: say why)."""
    before = {c.get('stem'): c.get('headline', '') for c in old}
    return [f'headline changed: {c["stem"]}: {before[c["stem"]]!r} -> {c.get("headline", "")!r}'
            for c in new if c.get('stem') in before and before[c['stem']] != c.get('headline', '')]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description='Build the report (HTML site + one PDF) from the executed notebooks.')
    ap.add_argument('--nbs', default=str(ROOT / 'nbs'), help='notebook folder (default nbs/)')
    ap.add_argument('--site', default=str(ROOT / '_site'), help='output folder of the HTML site (default _site/)')
    ap.add_argument('--build', default=str(ROOT / '_report'),
                    help='work folder: cache, executed notebooks, PDF sources')
    ap.add_argument('--only', nargs='*', help='only notebooks whose file name contains one of these strings')
    ap.add_argument('--force', action='store_true', help='re-execute notebooks even when cached')
    ap.add_argument('--no-pdf', action='store_true')
    ap.add_argument('--no-check', action='store_true', help='skip the headless-browser check')
    ap.add_argument('--fallback', action='store_true', help='use the standard-tools build even when quarto exists')
    ap.add_argument('--timeout', type=int, default=3600,
                    help='seconds allowed per cell (a loaded machine is slow, not wrong)')
    ap.add_argument('--strict-budgets', action='store_true',
                    help='fail (exit 3) when an executed chapter took longer than its budget in nbs/_budgets.json')
    ap.add_argument('--quick', action='store_true',
                    help='preview: skip `#| slow` cells (test mode, small data); the report says so')
    ap.add_argument('--pdf-code', choices=['all', 'analysis', 'none'], default='analysis',
                    help='code in the PDF: all cells, all but exported library code (default), or none')
    a = ap.parse_args(argv)
    nbs, site, build = Path(a.nbs).resolve(), Path(a.site).resolve(), Path(a.build).resolve()
    t_all = time.monotonic()
    notebooks = chapter_notebooks(nbs, a.only)
    if not notebooks:
        log(f'no numbered notebooks (NN_*.ipynb) in {nbs}')
        return 1
    try:
        if shutil.which('quarto') and not a.fallback:
            build_with_quarto(ROOT, nbs, site)
            chapters = [{'stem': p.stem, 'figures': 1} for p in notebooks if (site / f'{p.stem}.html').exists()]
            return 0 if a.no_check or browser_check(site, chapters[:1], strict=False) else 2
        log('quarto not on PATH: building the report with the standard-tools fallback '
            '(nbclient, own HTML renderer, pandoc -> typst, kaleido)')
        settings = read_settings(ROOT)
        machine = machine_description()
        budgets = {} if a.quick else read_budgets(nbs)
        records = execute_all(notebooks, build, ROOT, a.force, a.timeout, skip_slow=a.quick, budgets=budgets)
        if a.quick:
            machine += ' [QUICK PREVIEW: `#| slow` cells skipped, small data; run without --quick for the report]'
        from browser_check import find_chromium
        have_chromium = find_chromium() is not None
        pdf_rel = None if a.no_pdf else PDF_NAME
        chapters = build_site(records, site, settings, machine, pdf_rel, 'the standard-tools fallback (no Quarto)')
        if not a.no_pdf:
            build_pdf(records, chapters, build, site / PDF_NAME, settings, machine, have_chromium, a.pdf_code)
        old_path = build / 'chapters.json'
        old = json.loads(old_path.read_text(encoding='utf-8')) if old_path.exists() else []
        for line in headline_changes(old, chapters):
            log(line)
        (build / 'chapters.json').write_text(json.dumps(
            [{k: (str(v) if isinstance(v, Path) else v) for k, v in c.items()} for c in chapters], indent=1),
            encoding='utf-8')
        ok = True if a.no_check else browser_check(site, chapters, strict=False)
    except BuildError as e:
        log(f'REPORT BUILD FAILED: {e}')
        return 1
    for line in summary_table(records, budgets, time.monotonic() - t_all):
        log(line)
    over = [r['path'].stem for r in records if r['status'] == 'executed' and (b := budget_of(budgets, r['path'].stem))
            is not None and r['info'].get('seconds', 0.0) > b]
    if over:
        log(f'over budget ({nbs / "_budgets.json"}): {", ".join(over)}')
        if a.strict_budgets:
            return 3
    log(f'report built in {time.monotonic() - t_all:.1f} s: {site / "index.html"}'
        + ('' if a.no_pdf else f' and {site / PDF_NAME}'))
    return 0 if ok else 2


if __name__ == '__main__':
    sys.exit(main())
