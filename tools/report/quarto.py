"""Where Quarto exists: the book defined by the top-level `_quarto.yml` (chapters `nbs/NN_*.ipynb`), rendered by
Quarto from nbdev's processed copies of the notebooks (`_proc/`, where nbdev's `#| hide`, `#| export` and show_doc
processing has been applied); `book.chapters` is kept in sync with the numbered notebooks present."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .common import BuildError, chapter_notebooks, log, read_settings

QUARTO_YML = '_quarto.yml'


def book_chapters(root: Path, nbs: Path) -> list[str]:
    """The book's chapters as paths relative to `root`: `index.ipynb` (when present), then the numbered notebooks."""
    rel = Path(os.path.relpath(nbs, root)).as_posix()
    names = (['index.ipynb'] if (nbs / 'index.ipynb').exists() else []) + [p.name for p in chapter_notebooks(nbs)]
    return [f'{rel}/{n}' if rel != '.' else n for n in names]


_CHAPTERS = re.compile(r'^(?P<indent>[ \t]+)chapters:[ \t]*\n(?:(?P=indent)[ \t]+-[^\n]*\n?)*', re.M)


def with_chapters(text: str, chapters: list[str]) -> str:
    """`_quarto.yml` text with its `book.chapters` list replaced by `chapters` (comments and layout kept)."""
    m = _CHAPTERS.search(text)
    if m is None:
        raise BuildError(f'{QUARTO_YML}: no `book: chapters:` list to keep in sync')
    ind = m.group('indent')
    block = f'{ind}chapters:\n' + ''.join(f'{ind}  - {c}\n' for c in chapters)
    return text[:m.start()] + block + text[m.end():]


def sync_book(root: Path, nbs: Path) -> bool:
    """Rewrite `book.chapters` of `<root>/_quarto.yml` when the notebooks changed; return whether it was rewritten."""
    qy = root / QUARTO_YML
    text = qy.read_text(encoding='utf-8')
    new = with_chapters(text, book_chapters(root, nbs))
    if new != text:
        qy.write_text(new, encoding='utf-8')
        log(f'{qy}: book.chapters updated to the notebooks in {nbs}')
    return new != text


def proc_config(root: Path, nbs: Path, proc: Path, site: Path) -> dict:
    """The root project's configuration for rendering nbdev's processed copies in `proc`: chapter paths below `nbs`
    re-rooted to `proc`, output to `site`."""
    import yaml
    conf = yaml.safe_load((root / QUARTO_YML).read_text(encoding='utf-8'))
    rel = Path(os.path.relpath(nbs, root)).as_posix().rstrip('/') + '/'
    conf.setdefault('book', {})['chapters'] = [c[len(rel):] if c.startswith(rel) else c
                                               for c in conf['book'].get('chapters', [])]
    conf.setdefault('project', {})['output-dir'] = os.path.relpath(site, proc)
    return conf


def build_with_quarto(root: Path, nbs: Path, site: Path) -> None:
    """Keep the book in sync, let nbdev process the notebooks into `_proc/`, then `quarto render` the book there with
    the root `_quarto.yml` (run from the root; the site goes to `site`)."""
    import yaml
    log(f'quarto found on PATH: rendering with Quarto ({root / QUARTO_YML}); the standard-tools fallback is not used')
    if nbs.resolve() != (root / read_settings(root).get('nbs_path', 'nbs')).resolve():
        raise BuildError(f'the Quarto path renders the project notebooks (nbdev_proc_nbs), not {nbs}: use --fallback')
    sync_book(root, nbs)
    subprocess.run([str(Path(sys.executable).parent / 'nbdev_proc_nbs')], cwd=root, check=True)
    proc = root / '_proc'
    conf = proc_config(root, nbs, proc, site)
    (proc / QUARTO_YML).write_text(yaml.safe_dump(conf, sort_keys=False), encoding='utf-8')
    # html: plotly.js embedded in the page (no CDN); png: the static image Quarto puts in the typst PDF
    os.environ.setdefault('PLOTLY_RENDERER', 'notebook+png')
    r = subprocess.run(['quarto', 'render', str(proc), '--execute'], cwd=root)
    if r.returncode != 0:
        raise BuildError('quarto render failed (see its output above)')
    log(f'Quarto rendered the book to {site}')
