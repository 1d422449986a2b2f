"""Rewrap the `__all__` statement nbdev writes at the top of each module (`# %% auto #0`) to at most 120 columns.

nbdev 2.4.14 wraps the list at 120 columns before it adds the `__all__ = ` prefix (and at 160 when it updates an
existing module), so the first line can be longer than ruff's limit. This rewraps that one statement the same way
(names in the same order, continuation lines indented 11), counting the prefix; nothing else in the file changes.

    python tools/rewrap_all.py                  # every module in thu_big_data_ml/
    python tools/rewrap_all.py path/to/mod.py   # just these
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path
from textwrap import TextWrapper

ROOT = Path(__file__).resolve().parent.parent
MARK = '# %% auto #0'


def rewrap_all(text: str, width: int = 120) -> str:
    """`text` with its `# %% auto #0` cell's `__all__ = [...]` rewrapped to `width` columns (unchanged when it fits,
    when there is no such statement, or when the module does not parse)."""
    lines = text.splitlines(keepends=True)
    try:
        at = next(i for i, ln in enumerate(lines) if ln.rstrip('\n') == MARK) + 1
        tree = ast.parse(text)
    except (StopIteration, SyntaxError):
        return text
    node = next((n for n in tree.body if isinstance(n, ast.Assign) and n.lineno == at + 1
                 and [getattr(t, 'id', None) for t in n.targets] == ['__all__']), None)
    if node is None or not isinstance(node.value, ast.List):
        return text
    start, end = node.lineno - 1, node.end_lineno
    if all(len(ln.rstrip('\n')) <= width for ln in lines[start:end]):
        return text
    names = ast.literal_eval(node.value)
    tw = TextWrapper(width=width, initial_indent='__all__ = ', subsequent_indent=' ' * 11,
                     break_long_words=False, break_on_hyphens=False)
    tail = lines[end - 1][len(lines[end - 1].rstrip('\n')):]   # keep the statement's own line ending
    return ''.join(lines[:start]) + '\n'.join(tw.wrap(str(names))) + tail + ''.join(lines[end:])


def rewrap_files(paths: list[Path], width: int = 120) -> list[Path]:
    """Rewrap `__all__` in each file in place; return the files changed."""
    changed = []
    for p in paths:
        text = p.read_text(encoding='utf-8')
        new = rewrap_all(text, width)
        if new != text:
            p.write_text(new, encoding='utf-8')
            changed.append(p)
    return changed


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    paths = [Path(a) for a in args] or sorted((ROOT / 'thu_big_data_ml').glob('*.py'))
    changed = rewrap_files(paths)
    print(f'__all__ rewrapped to 120 columns in {len(changed)} module(s)' + ''.join(f'\n  {p}' for p in changed))
    return 0


if __name__ == '__main__':
    sys.exit(main())
