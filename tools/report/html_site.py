"""Stage 2: the HTML site, one page per chapter and an index, from the executed notebooks (nbconvert's markdown
and ANSI filters, pygments, plotly.js and MathJax served locally: no CDN)."""
from __future__ import annotations

import datetime as dt
import html
import json
import re
import shutil
from pathlib import Path

from .common import (PLOTLY_MIME, REPORT_DIR, WIDGET_MIME, _text, cell_directives, cell_visibility, chapter_meta,
                     describe_datasets, describe_machine, log, recolour, strip_directives)

MATHJAX_SRC = Path('/usr/share/javascript/mathjax')


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


def api_entries(source: str) -> list[tuple[str, str, str]]:
    """(name, signature, docstring) of what an `#| export` cell defines for readers, by nbdev's rule (`show_doc` blocks
    after exported cells: public names and dunders; a `@patch`ed function is `Class.name`). Parsed, not executed."""
    import ast
    try:
        tree = ast.parse(strip_directives(source))
    except SyntaxError:
        return []
    out = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if node.name.startswith('_') and not (node.name.startswith('__') and node.name.endswith('__')):
            continue
        name, fn = node.name, node
        if isinstance(node, ast.ClassDef):
            fn = next((b for b in node.body if isinstance(b, ast.FunctionDef) and b.name == '__init__'), None)
        elif any(isinstance(d, ast.Name) and d.id == 'patch' for d in node.decorator_list) and node.args.args:
            owner = node.args.args[0].annotation
            if owner is not None:
                name = f'{ast.unparse(owner)}.{node.name}'
        sig = ''
        if fn is not None:
            args = fn.args
            if isinstance(node, ast.ClassDef) or name != node.name:     # drop self from methods and patches
                args = ast.arguments(posonlyargs=args.posonlyargs, args=args.args[1:], vararg=args.vararg,
                                     kwonlyargs=args.kwonlyargs, kw_defaults=args.kw_defaults, kwarg=args.kwarg,
                                     defaults=args.defaults)
            sig = f'({ast.unparse(args)})' + (f' -> {ast.unparse(fn.returns)}' if getattr(fn, 'returns', None) else '')
        out.append((name, sig, ast.get_docstring(node) or ''))
    return out


def api_html(source: str) -> str:
    "The signature/docstring blocks of an export cell (`api_entries`), as nbdev's `show_doc` shows them."
    return ''.join(f'<div class="api"><p class="api-sig"><code><strong>{html.escape(n)}</strong>{html.escape(s)}</code>'
                   f'</p>{md2html(d) if d else ""}</div>' for n, s, d in api_entries(source))


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
            if 'export' in cell_directives(cell.source):
                block += api_html(cell.source)
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

