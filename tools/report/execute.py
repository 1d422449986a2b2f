"""Stage 1: execute the chapters (nbclient) in fresh kernels, cached with joblib by their code cells, the package
modules they import, the bench scripts and results files they name and the course files; budgets, timings, progress.

The kernel runs one cell before the chapter (tqdm's widget notice is filtered) and one after it, which prints the
datasets the chapter loaded (`thu_big_data_ml.core.noted_datasets()`, filled by every loader through
`core.note_dataset`), the machine (`core.machine_info()`) and the chapter's `SCALE`. Both cells are removed from
the executed notebook."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import time
from pathlib import Path

from .common import BuildError, cell_directives, log

INFO_MARK = '# __report_info__ (added by tools/build_report.py, removed after execution)'

# Runs in the kernel before the chapter. Nothing is added to the chapter's namespace.
START_CELL = INFO_MARK + r'''
import warnings as __w   # tqdm's notebook-widget notice names the build machine's site-packages: not report content
__w.filterwarnings('ignore', message='IProgress not found')
del __w
'''

# Runs in the kernel after the chapter: the datasets its loaders noted (`core.note_dataset`), where it ran, its scale.
# A package without the registry (an older checkout) means "no datasets", not a failed build.
INFO_CELL = INFO_MARK + r'''
def __report_info():
    import json
    try:
        from thu_big_data_ml.core import noted_datasets
    except ImportError:
        noted_datasets = list
    machine = None
    try:
        from thu_big_data_ml.core import machine_info
        machine = machine_info()
    except Exception:
        pass
    scale = globals().get('SCALE')
    print(json.dumps({'datasets': noted_datasets(), 'machine': machine,
                      'scale': scale if isinstance(scale, str) else None}, default=str))
__report_info()
del __report_info
'''

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
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.reads(nb_json, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(START_CELL))  # cell indices below are shifted back by one
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

    client = _progress_client()(nb, timeout=timeout, kernel_name='python3', allow_errors=False,
                                resources={'metadata': {'path': cwd}}, on_cell_execute=on_cell_execute,
                                on_cell_executed=on_cell_executed)
    client.relay = _TqdmRelay(label=lambda i: pos(i - 1))
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


class _TqdmRelay:
    """Shows a long cell's tqdm bars in the build log: the latest bar text of a stderr stream, at most every `every`
    seconds per cell (the notebook keeps the full output)."""

    def __init__(self, every: float = 15.0, label=lambda i: i):
        self.every, self.label, self.last = every, label, {}

    def feed(self, msg: dict, cell_index: int) -> str | None:
        if msg.get('msg_type') != 'stream' or msg.get('content', {}).get('name') != 'stderr':
            return None
        bars = [b.strip() for b in re.split(r'[\r\n]', msg['content'].get('text', '')) if '%|' in b or 'it/s]' in b]
        now = time.monotonic()
        if not bars or now - self.last.get(cell_index, -self.every) < self.every:
            return None
        self.last[cell_index] = now
        line = f'      cell {self.label(cell_index)}: {bars[-1][:110]}'
        log(line)
        return line


def _progress_client():
    from nbclient import NotebookClient

    class ProgressClient(NotebookClient):
        "nbclient's client, relaying tqdm bars to the build log (`_TqdmRelay`)."
        relay: _TqdmRelay | None = None

        def output(self, outs, msg, display_id, cell_index):
            if self.relay is not None:
                self.relay.feed(msg, cell_index)
            return super().output(outs, msg, display_id, cell_index)
    return ProgressClient


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


# Quarto's inline expressions in markdown, `{python} expr`: computed values in prose (the fallback evaluates them too).
INLINE = re.compile(r'`\{python\}\s+([^`]+?)\s*`')
INLINE_MARK = '# __report_inline__ (added by tools/build_report.py: the inline expressions of one markdown cell)'


def inline_cell(exprs: list[str]) -> str:
    """A code cell that prints the values of a markdown cell's inline expressions as a JSON list of markdown strings,
    as Quarto shows them: an `IPython.display.Markdown` as its markdown; a `str` as plain text (its markdown
    characters escaped); anything else by its `repr` (IPython's text/plain, e.g. `np.float64(0.5)`: format numbers
    in the expression). Nothing is left behind in the chapter's namespace."""
    items = ', '.join(f'({e})' for e in exprs)
    return (INLINE_MARK + '\nprint(__import__("json").dumps([(__v.data, 1) if type(__v).__name__ == "Markdown" else '
            f'(__v if isinstance(__v, str) else repr(__v), 0) for __v in [{items}]]))')


def _has_inline(cell) -> bool:
    "A markdown cell with inline expressions: it runs as a code cell (`inline_cell`) at its place."
    return cell.cell_type == 'markdown' and bool(INLINE.search(cell.source))


_MD_SPECIAL = re.compile(r'([\\`*_\[\]<>$|~#])')


def _inline_value(value: list) -> str:
    "A `[text, is_markdown]` pair from `inline_cell`: markdown as it is, plain text with its markdown characters escaped."
    text, is_md = value
    return text if is_md else _MD_SPECIAL.sub(r'\\\1', text)


def code_view(nb_text: str) -> tuple[str, list[int]]:
    """The notebook with only its code cells (what execution depends on) and their positions in the full notebook.
    Editing a markdown cell leaves this unchanged, so the chapter re-renders without re-executing, unless the edit
    changes the cell's inline expressions (`{python} expr`): those run as a code cell at the markdown cell's place."""
    import nbformat
    nb = nbformat.reads(nb_text, as_version=4)
    keep = []
    for k, c in enumerate(nb.cells):
        if c.cell_type == 'code':
            keep.append(k)
        elif _has_inline(c):
            nb.cells[k] = nbformat.v4.new_code_cell(inline_cell(INLINE.findall(c.source)))
            keep.append(k)
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
    code = [c for c in nb.cells if c.cell_type == 'code' or _has_inline(c)]
    if len(code) != len(ex.cells):
        raise BuildError(f'executed notebook has {len(ex.cells)} code cells, the source {len(code)}')
    for c, e in zip(code, ex.cells):
        if _has_inline(c):
            c.source = fill_inline(c.source, e)
        else:
            c.outputs, c.execution_count = e.get('outputs', []), e.get('execution_count')
    return nbformat.writes(nb)


def fill_inline(source: str, executed) -> str:
    """A markdown cell's source with each `{python} expr` replaced by its value from the executed inline cell."""
    text = ''.join(o.get('text', '') for o in executed.get('outputs', [])
                   if o.get('output_type') == 'stream' and o.get('name') == 'stdout')
    try:
        values = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BuildError(f'inline expressions gave no values: {INLINE.findall(source)}') from None
    it = iter(values)
    return INLINE.sub(lambda m: _inline_value(next(it)), source)


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
        deps = fingerprint(root, src) + hashlib.sha256((START_CELL + INFO_CELL).encode()).hexdigest()[:8]
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

