"""Stage 3: one PDF of all chapters: Markdown -> pandoc -> typst -> PDF; plotly figures exported to PNG with kaleido
(cached by content); a chapter typst cannot typeset becomes a note."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

from nbconvert.filters.ansi import strip_ansi as _strip_ansi

from .common import (PLOTLY_MIME, WIDGET_MIME, BuildError, _text, cell_visibility, describe_datasets, is_export_cell,
                     log, recolour, strip_directives)


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


_MATH = re.compile(r'(\$\$.+?\$\$|\$[^$\n]+?\$)', re.S)


def typst_friendly_math(md: str) -> str:
    """Inside math only: `\\|` (norm bars) -> `\\Vert`, which pandoc maps to typst's ‖ without relation spacing."""
    return _MATH.sub(lambda m: m.group(0).replace('\\|', '\\Vert '), md)


# Symbol names pandoc writes that newer typst releases dropped (typst 0.15: the `circle` modifier became `o`).
_TYPST_RENAMES = re.compile(r'\b(dot|plus|minus|times|div)\.circle\b')


def typst_compat(typ: str) -> str:
    """Rename symbols in pandoc's typst output that the installed typst no longer knows (`dot.circle` -> `dot.o`)."""
    return _TYPST_RENAMES.sub(r'\1.o', typ)


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

