"""Fail when `nbdev_export` would change thu_big_data_ml/ (the package must be in sync with nbs/).

nbdev writes each module's `__all__` wider than ruff's 120 columns; the modules carry it rewrapped
(tools/rewrap_all.py, also run by `make export`). This check rewraps the modules as they are first (so running it
right after a plain `nbdev_export` leaves them rewrapped), then exports and rewraps again and compares.
"""
import hashlib
import subprocess
import sys
from pathlib import Path

from rewrap_all import rewrap_files

root = Path(__file__).resolve().parent.parent
pkg = root / 'thu_big_data_ml'


def snapshot() -> dict:
    return {p.relative_to(pkg).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(pkg.rglob('*.py'))}


fixed = rewrap_files(sorted(pkg.rglob('*.py')))
if fixed:
    print(f'__all__ rewrapped to 120 columns in {len(fixed)} module(s) written by a plain nbdev_export:',
          *(p.relative_to(root).as_posix() for p in fixed), sep='\n  ')
before = snapshot()
subprocess.run([str(Path(sys.executable).parent / 'nbdev_export')], cwd=root, check=True)
rewrap_files(sorted(pkg.rglob('*.py')))
after = snapshot()
changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
if changed:
    print('nbdev_export changed the package; it was out of sync with nbs/:', *changed, sep='\n  ')
    print('Edit the notebooks, run `make export` (nbdev_export + tools/rewrap_all.py) and commit the regenerated '
          'modules.')
    sys.exit(1)
print(f'package in sync with notebooks ({len(after)} modules)')
