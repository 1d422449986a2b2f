"""The code-keyed disk cache: code changes, damaged entries, unwritable folders, cleaning."""
import json
import warnings

import pytest

from thu_big_data_ml import core
from thu_big_data_ml.core import CacheWarning, cached, clear_cache, code_digest


def _double(x, progress=False):
    return 2 * x


def test_same_call_computed_once(tmp_path):
    calls = []
    def f(x): calls.append(x); return x
    g = cached(f, location=tmp_path)
    assert g(1) == 1 and g(1) == 1 and calls == [1]
    assert g(2) == 2 and calls == [1, 2]


def test_ignored_argument_not_in_key(tmp_path):
    g = cached(_double, location=tmp_path, ignore=['progress'])
    assert g.entry(3, progress=True) == g.entry(3, progress=False) != g.entry(4)


def test_code_change_changes_key(tmp_path, monkeypatch):
    g = cached(_double, location=tmp_path, deps=['mf'])
    before = g.entry(3)
    real = core.code_digest
    monkeypatch.setattr(core, 'code_digest', lambda *m: real(*m) + 'edited')
    assert g.entry(3) != before


def test_code_digest_follows_imports(tmp_path, monkeypatch):
    pkg = tmp_path / 'pkg'; pkg.mkdir()
    (pkg / 'a.py').write_text('from .b import thing\n')
    (pkg / 'b.py').write_text('thing = 1\n')
    (pkg / 'c.py').write_text('other = 2\n')
    monkeypatch.setattr(core, '_package_dir', lambda: pkg)
    d1 = code_digest('a')
    (pkg / 'c.py').write_text('other = 3\n')
    assert code_digest('a') == d1                      # unrelated module
    (pkg / 'b.py').write_text('thing = 2\n')
    assert code_digest('a') != d1                      # imported module changed


def test_code_digest_unknown_module():
    with pytest.raises(ValueError, match='none of'):
        code_digest('no_such_module')


@pytest.mark.parametrize('damage', ['garbage', 'truncate', 'delete_result', 'bad_meta'])
def test_damaged_entry_recomputed(tmp_path, damage):
    calls = []
    def f(x): calls.append(x); return list(range(x))
    g = cached(f, location=tmp_path)
    g(50)
    e = g.entry(50)
    if damage == 'garbage': (e / 'result.pkl').write_bytes(b'x' * (e / 'result.pkl').stat().st_size)
    if damage == 'truncate': (e / 'result.pkl').write_bytes((e / 'result.pkl').read_bytes()[:10])
    if damage == 'delete_result': (e / 'result.pkl').unlink()
    if damage == 'bad_meta': (e / 'meta.json').write_text('{not json')
    with pytest.warns(CacheWarning, match='damaged cache entry'):
        assert g(50) == list(range(50))
    assert calls == [50, 50]
    assert g(50) == list(range(50)) and calls == [50, 50]     # repaired entry is used again


def test_unwritable_cache_still_computes(tmp_path):
    blocker = tmp_path / 'file'; blocker.write_text('a file where the cache folder should be')
    g = cached(_double, location=blocker / 'cache')
    with pytest.warns(CacheWarning, match='THU_BDML_CACHE'):
        assert g(4) == 8


def test_meta_records_arguments(tmp_path):
    g = cached(_double, location=tmp_path, deps=['core'])
    g(7)
    meta = g.info(7)
    assert meta['arguments']['x'] == '7' and set(meta['code']) == {'core'} and meta['bytes'] > 0
    assert json.loads((g.entry(7) / 'meta.json').read_text())['checksum'] == meta['checksum']


def test_clear_cache_removes_only_its_own(tmp_path):
    g = cached(_double, location=tmp_path); g(1)
    (tmp_path / 'mine.txt').write_text('keep me')
    (tmp_path / 'other').mkdir()
    gone = clear_cache(tmp_path)
    assert {p.name for p in gone} == {'calls', 'thu_bdml_cache.json'}
    assert (tmp_path / 'mine.txt').exists() and (tmp_path / 'other').is_dir()
    assert clear_cache(tmp_path) == []


def test_disabled_cache_writes_nothing(tmp_path):
    g = cached(_double, location=tmp_path, enabled=False)
    assert g(2) == 4 and not any(tmp_path.iterdir())


def test_consecutive_and_parenthesised_imports_all_count(tmp_path, monkeypatch):
    pkg = tmp_path / 'pkg'; pkg.mkdir()
    (pkg / 'a.py').write_text('from .b import x, y\nfrom .c import z\nfrom . import (d,\n    e)\n')
    for m in 'bcde': (pkg / f'{m}.py').write_text(f'{m} = 1\n')
    monkeypatch.setattr(core, '_package_dir', lambda: pkg)
    base = code_digest('a')
    for m in 'bcde':
        (pkg / f'{m}.py').write_text(f'{m} = 2\n')
        assert code_digest('a') != base, m
        base = code_digest('a')
