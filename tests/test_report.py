"""The report build (tools/build_report.py) on a small notebook set: execution, cache, HTML site, PDF, real browser."""
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'tools'))
import build_report  # noqa: E402
from report import browser_check, quarto  # noqa: E402

md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell


def _chapters(folder: Path) -> None:
    """Two small chapters in the project's conventions: title + summary, math, plotly, table, headline, hidden cell."""
    nb1 = nbformat.v4.new_notebook(cells=[
        md('# Alpha chapter\n\n> A small chapter with a figure and math.\n\n'
           'The objective is $J = \\tfrac12\\|A \\circ (X - UV^T)\\|_F^2 + \\lambda \\|U\\|_F^2$, '
           'masked as $(r - h(r)) \\odot m$.\n\n'
           '$$\\hat r_{ij} = \\frac{\\sum_k s_{ik} x_{kj}}{\\sum_k s_{ik}}$$'),
        code("SCALE = 'small'"),
        md('## Evidence\n\n| k | value |\n|---|---|\n| 20 | 1 |'),
        code("import numpy as np\nimport plotly.graph_objects as go\nrng = np.random.default_rng(0)\n"
             "y = rng.random(5)\nfig = go.Figure(go.Scatter(y=y, name='J'))\nfig.update_layout(title='Objective')\nfig"),
        md('The sum is `{python} f"{float(y.sum()):.4f}"` (inline: `{python} __import__("IPython.display").display.Markdown("**INLINE-MD**")`).'),
        code("import pandas as pd\npd.DataFrame({'k': [20, 50], 'value': [round(float(y[0]), 4), 2.0]})"),
        code('#| hide\nhidden_marker = "HIDDEN-CELL-SOURCE"'),
        code("#| report: headline\nfrom IPython.display import Markdown\n"
             "Markdown(f'value **{float(y.sum()):.4f}** with $k={20}$')"),
    ])
    nb2 = nbformat.v4.new_notebook(cells=[
        md('# Beta chapter\n\n> A chapter with plain output and a second figure.'),
        code("print('beta ran')"),
        code('#| export\ndef beta_fn(x: int = 1) -> int:\n    "Beta\'s `x`, doubled."\n    return 2 * x'),
        code("from thu_big_data_ml.core import note_dataset\n"
             "class RatingData:  # stand-in with the data API's fields\n"
             "    def __init__(self):\n        self.name, self.source, self.n_users, self.n_items = 'toy', 'generated', 3, 4\n"
             "d = note_dataset(RatingData())  # what every loader does on the way out"),
        code('del d  # dropped later: the dataset still counts'),
        code("import plotly.express as px\npx.bar(x=['a', 'b'], y=[1, 2])"),
    ])
    nbformat.write(nb1, folder / '01_alpha.ipynb')
    nbformat.write(nb2, folder / '02_beta.ipynb')


def _build(tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / 'tools' / 'build_report.py'), '--fallback', '--nbs', str(tmp / 'nbs'),
           '--site', str(tmp / 'site'), '--build', str(tmp / 'build'), '--no-check', *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope='module')
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('report')
    (tmp / 'nbs').mkdir()
    _chapters(tmp / 'nbs')
    first = _build(tmp)
    assert first.returncode == 0, first.stdout + first.stderr
    second = _build(tmp, '--no-pdf')
    assert second.returncode == 0, second.stdout + second.stderr
    executed = nbformat.read(tmp / 'build' / 'executed' / '01_alpha.ipynb', as_version=4)
    y_sum = None
    for cell in executed.cells:
        if 'report: headline' in cell.source:
            y_sum = re.search(r'\*\*([0-9.]+)\*\*', cell.outputs[0]['data']['text/markdown']).group(1)
    return {'tmp': tmp, 'site': tmp / 'site', 'first': first.stdout, 'second': second.stdout, 'headline': y_sum}


def test_progress_line_per_notebook_and_cache(report):
    assert re.search(r'\[1/2\] 01_alpha\.ipynb: executed in [0-9.]+ s', report['first'])
    assert re.search(r'\[2/2\] 02_beta\.ipynb: executed in [0-9.]+ s', report['first'])
    assert 'quarto not on PATH' in report['first']  # the fallback says so
    # second run: nothing re-executed
    assert re.search(r'\[1/2\] 01_alpha\.ipynb: cached', report['second']), report['second']
    assert re.search(r'\[2/2\] 02_beta\.ipynb: cached', report['second'])
    assert 'executing' not in report['second']


def test_error_names_notebook_and_cell(tmp_path):
    (tmp_path / 'nbs').mkdir()
    nb = nbformat.v4.new_notebook(cells=[md('# Broken'), code('x = 1'), code('y = x / 0')])
    nbformat.write(nb, tmp_path / 'nbs' / '05_broken.ipynb')
    r = _build(tmp_path, '--no-pdf')
    assert r.returncode == 1
    assert re.search(r'05_broken\.ipynb: cell 2 .*y = x / 0.* failed: ZeroDivisionError', r.stdout), r.stdout
    assert (tmp_path / 'build' / 'failed' / '05_broken.ipynb').exists()


def test_inline_values_reach_the_site(report):
    page = (report['site'] / '01_alpha.html').read_text()
    assert f"The sum is {report['headline']}" in page and '<strong>INLINE-MD</strong>' in page and '{python}' not in page


def test_export_cells_get_signature_and_docstring_blocks(report):
    "As nbdev's show_doc after exported cells: public names, patched methods as Class.name, self dropped."
    page = (report['site'] / '02_beta.html').read_text()
    assert '<strong>beta_fn</strong>(x: int=1) -&gt; int' in page and 'doubled.' in page
    src = ('#| export\n@patch\ndef fit(self: Model, k: int = 5) -> None:\n    "Fit."\n'
           'def _private(): pass\nclass Box:\n    "A box."\n    def __init__(self, a, b=2): pass')
    assert build_report.api_entries(src) == [('Model.fit', '(k: int=5) -> None', 'Fit.'), ('Box', '(a, b=2)', 'A box.')]


def test_site_pages_navigation_and_no_cdn(report):
    site = report['site']
    index = (site / 'index.html').read_text()
    for stem, title in (('01_alpha', 'Alpha chapter'), ('02_beta', 'Beta chapter')):
        assert f'href="{stem}.html"' in index and title in index
    assert 'A small chapter with a figure and math.' in index  # one-line summary
    assert report['headline'] and report['headline'] in index  # headline result computed by the notebook
    assert 'CPU cores' in index  # machine
    assert 'toy (generated Netflix-shaped data)' in index  # dataset noted in the kernel (core.note_dataset)
    assert 'toy (generated Netflix-shaped data, 3 users x 4 items)' in (site / '02_beta.html').read_text()
    assert 'none detected' in index  # chapter 1 loads no dataset
    alpha = (site / '01_alpha.html').read_text()
    assert 'href="02_beta.html"' in alpha and 'href="index.html"' in alpha  # prev / next
    assert 'HIDDEN-CELL-SOURCE' not in alpha and '#| hide' not in alpha
    assert '<details class="code">' in alpha  # foldable code
    assert alpha.count('class="plotly-figure"') == 1
    assert (site / 'assets' / 'plotly.min.js').stat().st_size > 1_000_000  # shipped once, locally
    for page in site.glob('*.html'):
        text = page.read_text()
        remote = re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?:[^"]+)"', text)
        assert not remote, f'{page.name} loads {remote}'
    chapters = json.loads((report['tmp'] / 'build' / 'chapters.json').read_text())
    assert [c['figures'] for c in chapters] == [1, 1]


def test_pdf_sections_and_images(report):
    from pypdf import PdfReader
    pdf = report['site'] / build_report.PDF_NAME
    reader = PdfReader(str(pdf))
    top = [o for o in reader.outline if not isinstance(o, list)]
    assert [o.title for o in top] == ['1 Alpha chapter', '2 Beta chapter']
    starts = [reader.get_destination_page_number(o) for o in top] + [len(reader.pages)]
    for i in range(len(top)):  # each chapter has a figure, so each must contain an image
        n = sum(len(reader.pages[p].images) for p in range(starts[i], starts[i + 1]))
        assert n >= 1, f'no image in chapter {top[i].title}'
    text = ''.join(p.extract_text() for p in reader.pages[:starts[0]])
    assert 'Contents' in text and 'Provenance' in text


def test_browser_renders_plots_and_math(report):
    if not browser_check.find_chromium():
        pytest.skip(f'Chromium missing: {browser_check.INSTALL_HINT}')
    site = report['site']
    shots = site / '_checks'
    reps = browser_check.check_pages([site / 'index.html', site / '01_alpha.html'], shots)
    index, chapter = reps
    assert index.problems() == [] and chapter.problems(expect_plot=True, expect_math=True) == []
    assert chapter.probe['plotly_svgs'] == 1
    assert chapter.probe['math_rendered'] >= 2 and index.probe['math_rendered'] >= 1
    assert chapter.requests and all(u.startswith(('file:', 'data:')) for u in chapter.requests)
    assert not chapter.failed_requests
    for r in reps:
        assert Path(r.screenshot).stat().st_size > 10_000


def test_browser_check_catches_network_and_unrendered_math(tmp_path):
    if not browser_check.find_chromium():
        pytest.skip(f'Chromium missing: {browser_check.INSTALL_HINT}')
    page = tmp_path / 'bad.html'
    page.write_text('<html><body><p data-has-math>$x$</p><img src="https://example.invalid/x.png"></body></html>')
    rep, = browser_check.check_pages([page], timeout=15)
    probs = ' '.join(rep.problems())
    assert 'need the network' in probs and 'not typeset' in probs


def test_directives_and_math_helpers():
    d = build_report.cell_directives('#| hide\n#| report: headline\nx = 1\n#| late: 1')
    assert d == {'hide': '', 'report': 'headline'}
    assert build_report.strip_directives('#| export\n\ndef f(): pass') == 'def f(): pass'
    assert build_report.typst_friendly_math(r'a \| b $\|A\|_F$') == r'a \| b $\Vert A\Vert _F$'
    nb = nbformat.v4.new_notebook(cells=[md('# T\n\n> S'), code('#| report: headline\n1')])
    nb.cells[1].outputs = [nbformat.v4.new_output('execute_result', {'text/plain': '0.5'}, execution_count=1)]
    meta = build_report.chapter_meta(nb, Path('07_x.ipynb'))
    assert (meta['title'], meta['summary'], meta['headline'], meta['number']) == ('T', 'S', '0.5', 7)


def test_quarto_used_when_on_path(tmp_path, monkeypatch):
    (tmp_path / 'nbs').mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[md('# Q')]), tmp_path / 'nbs' / '01_q.ipynb')
    fake = tmp_path / 'bin'
    fake.mkdir()
    (fake / 'quarto').write_text('#!/bin/sh\nexit 0\n')
    (fake / 'quarto').chmod(0o755)
    monkeypatch.setenv('PATH', f"{fake}:{__import__('os').environ['PATH']}")
    calls = []
    monkeypatch.setattr(build_report, 'build_with_quarto', lambda *a: calls.append(a))
    monkeypatch.setattr(build_report, 'execute_all', lambda *a, **k: pytest.fail('fallback used although quarto exists'))
    args = ['--nbs', str(tmp_path / 'nbs'), '--site', str(tmp_path / 'site'), '--build', str(tmp_path / 'b'), '--no-check']
    assert build_report.main(args) == 0 and len(calls) == 1
    monkeypatch.setattr(build_report, 'execute_all', lambda *a, **k: (_ for _ in ()).throw(build_report.BuildError('fallback')))
    assert build_report.main(args + ['--fallback']) == 1 and len(calls) == 1  # --fallback forces the standard tools


def test_quick_mode_drops_slow_cells():
    nb = nbformat.v4.new_notebook(cells=[code("SCALE = 'small'"), code("#| slow\nSCALE = 'full'"), md('#| slow is text')])
    out = nbformat.reads(build_report.without_slow_cells(nbformat.writes(nb)), as_version=4)
    assert [c.source for c in out.cells] == ["SCALE = 'small'", '#| slow is text']


def test_markdown_edit_rerenders_without_executing(tmp_path):
    (tmp_path / 'nbs').mkdir()
    _chapters(tmp_path / 'nbs')
    assert _build(tmp_path, '--no-pdf').returncode == 0
    p = tmp_path / 'nbs' / '01_alpha.ipynb'
    nb = nbformat.read(p, as_version=4)
    nb.cells.insert(1, md('A NEW PARAGRAPH written after the first build.'))
    nbformat.write(nb, p)
    r = _build(tmp_path, '--no-pdf')
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r'\[1/2\] 01_alpha\.ipynb: cached', r.stdout) and 'executing' not in r.stdout, r.stdout
    assert 'A NEW PARAGRAPH' in (tmp_path / 'site' / '01_alpha.html').read_text()
    # a code edit re-executes that chapter only
    p2 = tmp_path / 'nbs' / '02_beta.ipynb'
    nb2 = nbformat.read(p2, as_version=4)
    nb2.cells.append(code("print('EDITED CODE CELL')"))
    nbformat.write(nb2, p2)
    r = _build(tmp_path, '--no-pdf')
    assert re.search(r'\[1/2\] 01_alpha\.ipynb: cached', r.stdout), r.stdout
    assert re.search(r'\[2/2\] 02_beta\.ipynb: executing', r.stdout), r.stdout
    assert 'EDITED CODE CELL' in (tmp_path / 'site' / '02_beta.html').read_text()


def test_budgets_summary_and_strict(tmp_path):
    (tmp_path / 'nbs').mkdir()
    _chapters(tmp_path / 'nbs')
    (tmp_path / 'nbs' / '_budgets.json').write_text(json.dumps({'#': 'comment', '01_alpha': 0.0001, '02': 600, '_total': 900}))
    r = _build(tmp_path, '--no-pdf', '--strict-budgets')
    assert r.returncode == 3, r.stdout + r.stderr
    assert re.search(r'01_alpha\s+executed\s+[0-9.]+\s+0\s+OVER by', r.stdout), r.stdout
    assert re.search(r'02_beta\s+executed\s+[0-9.]+\s+600\s+ok', r.stdout), r.stdout
    assert 'over budget' in r.stdout and 'all chapters (execution)' in r.stdout
    r = _build(tmp_path, '--no-pdf')                 # cached now; not strict: the report still builds
    assert r.returncode == 0 and re.search(r'01_alpha\s+cached', r.stdout), r.stdout
    assert 'by the last build' not in r.stdout or 'to execute' in r.stdout


def test_inline_expressions_run_at_their_cell_and_fill_the_prose():
    "`{python} expr` in markdown (Quarto's syntax) is evaluated where the cell stands; prose edits around it stay cached."
    nb = nbformat.v4.new_notebook(cells=[code('x = 2'), md('x is `{python} x` and twice `{python} f"{2 * x:.1f}"`.'),
                                         code('x = 5'),
                                         md("As Quarto: `{python} '**plain**'`, `{python} __import__('numpy').float64(0.5)`.")])
    view, pos = build_report.code_view(nbformat.writes(nb))
    cells = nbformat.reads(view, as_version=4).cells
    assert pos == [0, 1, 2, 3] and cells[1].source.startswith(build_report.INLINE_MARK)
    import contextlib, io
    ns, outs = {}, []
    for c in cells:                       # run the view as a kernel would, recording stdout per cell
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(c.source, ns)
        c.outputs = [nbformat.v4.new_output('stream', name='stdout', text=buf.getvalue())] if buf.getvalue() else []
    merged = nbformat.reads(build_report.merge_executed(nbformat.writes(nbformat.v4.new_notebook(cells=cells)),
                                                        nbformat.writes(nb)), as_version=4)
    assert merged.cells[1].source == 'x is 2 and twice 4.0.'      # the value at the cell, not after x = 5
    assert 'x = 5' in merged.cells[2].source and ns['x'] == 5 and not any(k.startswith('__v') for k in ns)
    assert merged.cells[3].source == 'As Quarto: \\*\\*plain\\*\\*, np.float64(0.5).'    # text escaped; repr, not str
    edited = nbformat.v4.new_notebook(cells=[code('x = 2'), md('Now x is `{python} x` and twice `{python} f"{2 * x:.1f}"`!'),
                                             code('x = 5'), nb.cells[3]])
    assert build_report.code_view(nbformat.writes(edited))[0] == view            # prose edit: same code view (cached)
    changed = nbformat.v4.new_notebook(cells=[code('x = 2'), md('x is `{python} x + 1`.'), code('x = 5')])
    assert build_report.code_view(nbformat.writes(changed))[0] != view           # expression edit: re-executes


def test_long_cells_relay_their_tqdm_bars_to_the_build_log(capsys):
    from report.execute import _TqdmRelay
    relay = _TqdmRelay(every=3600, label=lambda i: i + 100)
    bar = lambda t: {'msg_type': 'stream', 'content': {'name': 'stderr', 'text': t}}
    assert relay.feed(bar('\rfit:  10%|#         | 1/10 [00:01<00:09, 1.0it/s]'), 3) == \
        '      cell 103: fit:  10%|#         | 1/10 [00:01<00:09, 1.0it/s]'
    assert relay.feed(bar('\rfit:  20%|##        | 2/10 [00:02<00:08, 1.0it/s]'), 3) is None    # throttled
    assert relay.feed({'msg_type': 'stream', 'content': {'name': 'stdout', 'text': '50%|##'}}, 4) is None
    assert relay.feed(bar('a warning, not a bar'), 5) is None
    assert 'cell 103: fit:  10%' in capsys.readouterr().out


def test_code_view_ignores_markdown_and_ids():
    a = nbformat.v4.new_notebook(cells=[md('# T'), code('x = 1'), md('text')])
    b = nbformat.v4.new_notebook(cells=[md('# T changed'), md('more'), code('x = 1')])
    ca, pa = build_report.code_view(nbformat.writes(a))
    cb, pb = build_report.code_view(nbformat.writes(b))
    assert ca == cb and pa == [1] and pb == [2]
    c = nbformat.v4.new_notebook(cells=[code('x = 2')])
    assert build_report.code_view(nbformat.writes(c))[0] != ca


def test_section_notebooks_follow_their_chapter(tmp_path):
    for n in ('03_mf.ipynb', '03a_autoencoder.ipynb', '04_reg.ipynb', 'index.ipynb', '03ab_no.ipynb', 'x03_no.ipynb'):
        (tmp_path / n).write_text('{}')
    assert [p.name for p in build_report.chapter_notebooks(tmp_path)] == ['03_mf.ipynb', '03a_autoencoder.ipynb', '04_reg.ipynb']


def test_fingerprint_follows_imports_benches_and_results(tmp_path, monkeypatch):
    "A library edit re-executes only the chapters importing the module (transitively); a bench or results file only its reader."
    pkg = tmp_path / 'thu_big_data_ml'; pkg.mkdir()
    (pkg / 'core.py').write_text('X = 1\n')
    (pkg / 'mf.py').write_text('from .core import X\n')
    (pkg / 'cf.py').write_text('Y = 2\n')
    (tmp_path / 'bench' / 'results').mkdir(parents=True)
    (tmp_path / 'bench' / 'bench_fm.py').write_text('print(1)\n')
    monkeypatch.delenv('THU_BDML_RESULTS', raising=False)
    ch_mf = 'from thu_big_data_ml.mf import X\nrec, why = lookup_results("fm_ml1m", fingerprint=f, deps=["fm"])'
    ch_cf = 'from thu_big_data_ml import cf\nsubprocess.run(["bench/bench_fm.py"])'
    fp = lambda: (build_report.fingerprint(tmp_path, ch_mf), build_report.fingerprint(tmp_path, ch_cf))
    a = fp()
    (pkg / 'core.py').write_text('X = 3\n')            # mf imports core: only the mf chapter changes
    b = fp(); assert b[0] != a[0] and b[1] == a[1]
    (pkg / 'cf.py').write_text('Y = 4\n')
    c = fp(); assert c[0] == b[0] and c[1] != b[1]
    (tmp_path / 'bench' / 'results' / 'fm_ml1m.json').write_text('{}')   # a new results file: its reader only
    d = fp(); assert d[0] != c[0] and d[1] == c[1]
    (tmp_path / 'bench' / 'bench_fm.py').write_text('print(2)\n')        # the bench script: the chapter running it
    e = fp(); assert e[0] == d[0] and e[1] != d[1]
    (tmp_path / 'bench' / 'results' / 'other.json').write_text('{}')     # unnamed results: nothing changes
    assert fp() == e


def test_quarto_book_lists_every_chapter():
    "The top-level _quarto.yml (the Quarto book) lists nbs/index.ipynb and the numbered notebooks in build order."
    import yaml
    conf = yaml.safe_load((ROOT / '_quarto.yml').read_text(encoding='utf-8'))
    want = ['nbs/index.ipynb'] + [f'nbs/{p.name}' for p in build_report.chapter_notebooks(ROOT / 'nbs')]
    assert conf['project']['type'] == 'book' and conf['book']['chapters'] == want
    assert quarto.book_chapters(ROOT, ROOT / 'nbs') == want
    assert not (ROOT / 'nbs' / '_quarto.yml').exists() or 'nbs/_quarto.yml' in (ROOT / '.gitignore').read_text()


def test_quarto_chapters_kept_in_sync(tmp_path):
    "A new notebook enters book.chapters (comments kept); the processed copy renders from _proc with the same book."
    import yaml
    nbs = tmp_path / 'nbs'
    nbs.mkdir()
    for n in ('index.ipynb', '01_a.ipynb', '02_b.ipynb'):
        (nbs / n).write_text('{}')
    text = ('# a comment\nproject:\n  type: book\n  output-dir: _docs\nbook:\n  title: "T"\n  chapters:\n'
            '    - nbs/index.ipynb\n    - nbs/01_a.ipynb\nformat:\n  html:\n    toc: true\n')
    (tmp_path / '_quarto.yml').write_text(text)
    assert quarto.sync_book(tmp_path, nbs) is True
    new = (tmp_path / '_quarto.yml').read_text()
    assert new.startswith('# a comment') and 'toc: true' in new
    assert yaml.safe_load(new)['book']['chapters'] == ['nbs/index.ipynb', 'nbs/01_a.ipynb', 'nbs/02_b.ipynb']
    assert quarto.sync_book(tmp_path, nbs) is False and (tmp_path / '_quarto.yml').read_text() == new
    conf = quarto.proc_config(tmp_path, nbs, tmp_path / '_proc', tmp_path / '_site')
    assert conf['book']['chapters'] == ['index.ipynb', '01_a.ipynb', '02_b.ipynb']
    assert conf['project'] == {'type': 'book', 'output-dir': '../_site'} and conf['format'] == {'html': {'toc': True}}


def test_typst_symbol_renames_and_bad_chapter_degrades(tmp_path):
    """pandoc writes `dot.circle` for \\odot, which typst 0.15 no longer knows; a chapter typst cannot compile
    becomes a note in the PDF (warning in the log) instead of failing the whole PDF."""
    assert build_report.typst_compat('$a dot.circle b plus.circle c$') == '$a dot.o b plus.o c$'
    assert build_report.typst_compat('dot.circles') == 'dot.circles'
    import json as _json
    pandoc = build_report.pandoc_path()
    meta = tmp_path / 'meta.json'
    meta.write_text(_json.dumps({'title': 't'}))
    good = '# Good\n\nMasked loss $(r - h) \\odot m$.'
    bad = '# Bad\n\n```{=typst}\n#this_function_does_not_exist()\n```'
    pdf = tmp_path / 'r.pdf'
    replaced = build_report.typeset_chapters([good, bad], ['Good', 'Bad'], tmp_path, tmp_path / 'r.typ', pdf,
                                             pandoc, meta)
    assert replaced == ['Bad'] and pdf.stat().st_size > 0
    from pypdf import PdfReader
    text = ''.join(pg.extract_text() for pg in PdfReader(str(pdf)).pages)
    assert 'could not be typeset' in text and 'Masked loss' in text
    assert build_report.typeset_chapters([good], ['Good'], tmp_path, tmp_path / 'r.typ', pdf, pandoc, meta) == []


def test_headline_changes_are_reported():
    old = [{'stem': '01_a', 'headline': 'RMSE **0.9000**'}, {'stem': '02_b', 'headline': 'x'}]
    new = [{'stem': '01_a', 'headline': 'RMSE **0.9100**'}, {'stem': '02_b', 'headline': 'x'}, {'stem': '03_c'}]
    lines = build_report.headline_changes(old, new)
    assert len(lines) == 1 and '01_a' in lines[0] and '0.9000' in lines[0] and '0.9100' in lines[0]
    assert build_report.headline_changes([], new) == []


def test_method_colours_are_the_same_in_every_figure():
    import plotly.graph_objects as go
    spec = go.Figure([go.Scatter(y=[1, 2], name='biased MF'), go.Bar(y=[1], name='ALS'), go.Scatter(y=[3], name='other'),
                      go.Scatter(y=[1, 2], name='MF', marker=dict(color=[1, 2]))]).to_plotly_json()
    out = build_report.recolour(spec)
    c = build_report.METHOD_COLOURS
    assert out['data'][0]['line']['color'] == out['data'][0]['marker']['color'] == c['biased mf']
    assert out['data'][1]['marker']['color'] == c['als'] and 'line' not in out['data'][1]
    assert out['data'][2] == spec['data'][2]                       # unknown names keep plotly's colours
    assert out['data'][3]['marker']['color'] == [1, 2] and out['data'][3]['line']['color'] == c['mf']
    go.Figure(out)                                                 # still a valid figure for kaleido
    assert spec['data'][0].get('line', {}).get('color') is None    # the input is not modified


def test_summary_may_span_several_quote_lines():
    nb = nbformat.v4.new_notebook(cells=[md('# Title\n\n> First sentence, the module docstring.\n> Second line of it.\n\nText.')])
    meta = build_report.chapter_meta(nb, Path('03_x.ipynb'))
    assert meta['summary'] == 'First sentence, the module docstring. Second line of it.'
    nb = nbformat.v4.new_notebook(cells=[md('# Title\n\n> One line.')])
    assert build_report.chapter_meta(nb, Path('03_x.ipynb'))['summary'] == 'One line.'


def test_kernel_cells_read_the_dataset_registry(monkeypatch, capsys):
    "The cell run after a chapter prints core.noted_datasets(); a package without the registry means no datasets."
    import types
    from report import execute
    from thu_big_data_ml import core
    ns = {}
    exec(execute.START_CELL, ns)
    assert set(ns) == {'__builtins__'}                       # nothing added to the chapter's namespace
    core.forget_datasets()
    toy = types.SimpleNamespace(name='toy', source='generated', n_users=3, n_items=4, train=[1, 2], test=None)
    core.note_dataset(toy)
    exec(execute.INFO_CELL, {'SCALE': 'small'})
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info['datasets'] == [{'name': 'toy', 'source': 'generated', 'n_users': 3, 'n_items': 4, 'n_train': 2,
                                 'n_test': None}] and info['scale'] == 'small' and info['machine']
    core.forget_datasets()
    old = types.ModuleType('thu_big_data_ml.core')           # an older package: no noted_datasets
    monkeypatch.setitem(sys.modules, 'thu_big_data_ml.core', old)
    exec(execute.INFO_CELL, {})
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info == {'datasets': [], 'machine': None, 'scale': None}
