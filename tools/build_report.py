"""Build the report: execute the numbered notebooks, render an HTML site and one PDF, check them in a browser.

    python tools/build_report.py                 # what `make report` runs
    python tools/build_report.py --only 02 --no-pdf
    python tools/build_report.py --nbs DIR --site DIR --build DIR   # any notebook folder (the tests use this)

This file is the command line; the stages live in the package `tools/report/`:
- `report.common`: paths, settings, the chapter list, cell directives (nbdev's parser), chapter metadata, colours;
- `report.execute`: nbclient executes every `NN_*.ipynb` in order in a fresh kernel (cwd = the notebook folder,
  plotly figures as JSON), cached with joblib by the chapter's code cells, the package modules it imports, the bench
  scripts and results files it names and the course data files (`--force` re-executes everything); an error stops
  the build naming notebook, cell and exception; budgets, timings and progress;
- `report.html_site`: one page per chapter + an index (title, abstract, chapter table with one-line summaries and
  headline results, dataset and machine), navigation, foldable code, plotly from one local `plotly.min.js`,
  MathJax 2 (SVG output) copied from Debian's `libjs-mathjax`. No CDN;
- `report.pdf`: the same chapters as Markdown -> pandoc -> typst -> PDF (title page, contents, numbered sections);
  plotly figures exported to PNG with kaleido + Chromium, cached by content;
- `report.browser_check`: headless Chromium opens the index and one chapter, checks plots drew, math typeset and no
  network request failed, and saves screenshots in `<site>/_checks/`;
- `report.quarto`: with `quarto` on PATH the book of the top-level `_quarto.yml` is rendered by Quarto instead
  (HTML site + one typst PDF; `--fallback` forces the standard tools).

Chapter conventions read by the build (all optional):
- the first markdown cell is `# Title` followed by `> one-line summary` (nbdev style);
- a cell whose first line is `#| report: headline` produces the chapter's headline result (its
  Markdown / printed output is shown on the index);
- `#| hide` hides a cell, `#| echo: false` hides its code, `#| output: false` its outputs;
  other `#|` lines are removed from the displayed code.
Which datasets a chapter used is what its loaders noted in the kernel (`thu_big_data_ml.core.note_dataset`, read
with `core.noted_datasets()` after the chapter ran); a chapter that builds data otherwise calls `note_dataset` itself.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # the package tools/report/, also when imported

from report.common import (METHOD_COLOURS, PDF_NAME, ROOT, BuildError, cell_directives, chapter_meta,  # noqa: E402,F401
                           chapter_notebooks, describe_datasets, log, machine_description, read_settings, recolour,
                           strip_directives)
from report.execute import (INFO_CELL, INLINE_MARK, START_CELL, budget_of, code_view, execute_all, fingerprint,  # noqa: E402,F401
                            merge_executed, read_budgets, summary_table, without_slow_cells)
from report.html_site import api_entries, build_site  # noqa: E402,F401
from report.pdf import build_pdf, pandoc_path, typeset_chapters, typst_compat, typst_friendly_math  # noqa: E402,F401
from report.quarto import build_with_quarto  # noqa: E402


def browser_check(site: Path, chapters: list[dict], strict: bool) -> bool:
    from report.browser_check import INSTALL_HINT, check_pages, find_chromium
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
        from report.browser_check import find_chromium
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
