"""Fail when `nbdev_export` would change thu_big_data_ml/ (the package must be in sync with nbs/)."""
import hashlib
import subprocess
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
pkg = root / 'thu_big_data_ml'


def snapshot() -> dict:
    return {p.relative_to(pkg).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(pkg.rglob('*.py'))}


before = snapshot()
subprocess.run([str(Path(sys.executable).parent / 'nbdev_export')], cwd=root, check=True)
after = snapshot()
changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
if changed:
    print('nbdev_export changed the package; it was out of sync with nbs/:', *changed, sep='\n  ')
    print('Edit the notebooks, run `make export` (nbdev_export) and commit the regenerated modules.')
    sys.exit(1)
print(f'package in sync with notebooks ({len(after)} modules)')
