"""Data chapter: readers, bad input, generator, MovieLens, folds, download, caching."""
import http.server
import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from thu_big_data_ml.data import (COURSE_FILES, DataFormatError, Interactions, NetflixShape, download_file,
                                  expected_rating, generate_netflix_like, holdout_split, kfold_splits,
                                  load_course_data, load_movielens, noise_floor, read_course_files,
                                  read_netflix_prize, read_ratings_file, read_titles, read_users)

SMALL = NetflixShape().small(n_users=120, n_movies=150, n_titles=200, n_ratings=6000)

@pytest.fixture(scope='module')
def gen_dir(tmp_path_factory):
    return generate_netflix_like(tmp_path_factory.mktemp('gen'), SMALL, progress=False)

def write(tmp_path, name, text, enc='latin-1'):
    p = tmp_path / name; p.write_bytes(text.encode(enc)); return p

# ---------------------------------------------------------------- bad input, each names file and line
@pytest.mark.parametrize('text,line,msg', [
    ('1 2 3 2005-01-01\n4 5 2005-01-01\n', 2, 'expected 4'),
    ('1 2 3 2005-01-01\n1 2 3 4 2005-01-01\n', 2, 'expected 4'),
    ('1 2 3 2005-01-01\nx 5 3 2005-01-01\n', 2, 'integer'),
    ('1 2 3 2005-01-01\n4 5 6 2005-01-01\n', 2, '1..5'),
    ('1 2 0 2005-01-01\n', 1, '1..5'),
    ('1 2 3 2005-01-01\n4 5 3 2005-13-01\n', 2, 'date'),
    ('1 2 3 2005-01-01\n4 5 3 20050101xx\n', 2, 'date'),
    ('1 2 3 2005-01-01\n\n1 2 4 2005-01-02\n', 3, 'duplicate'),
    ('1 2 3 2005-01-01\n4 5 3 2005-01-01\xe9\n', 2, 'undecodable'),
])
def test_bad_ratings_name_file_and_line(tmp_path, text, line, msg):
    p = write(tmp_path, 'netflix_train.txt', text)
    with pytest.raises(DataFormatError) as e: read_ratings_file(p)
    assert e.value.line == line and msg in str(e.value) and 'netflix_train.txt' in str(e.value)

def test_empty_file(tmp_path):
    with pytest.raises(DataFormatError, match='empty'): read_ratings_file(write(tmp_path, 't.txt', ''))
    with pytest.raises(DataFormatError, match='empty'): read_users(write(tmp_path, 'users.txt', '\n\n'))
    with pytest.raises(DataFormatError, match='empty'): read_titles(write(tmp_path, 'movie_titles.txt', ''))

def test_duplicates_keep_last_policy(tmp_path):
    p = write(tmp_path, 't.txt', '1 2 3 2005-01-01\n1 2 5 2005-01-02\n3 4 1 2004-02-29\n')
    df = read_ratings_file(p, on_duplicate='keep_last')
    assert len(df) == 2 and df.loc[df.user == 1, 'rating'].item() == 5
    with pytest.raises(ValueError, match='on_duplicate'): read_ratings_file(p, on_duplicate='sum')

def test_blank_lines_skipped_and_days(tmp_path):
    df = read_ratings_file(write(tmp_path, 't.txt', '\n1 2 3 1970-01-02\n\n7 8 5 2005-12-31\n\n'))
    assert df['day'].tolist() == [1, (np.datetime64('2005-12-31') - np.datetime64('1970-01-01')).astype(int)]

def test_raw_file_not_modified(tmp_path):
    p = write(tmp_path, 't.txt', '1 2 3 2005-01-01\n4 5 6 2005-01-01\n')
    before = p.read_bytes()
    with pytest.raises(DataFormatError): read_ratings_file(p)
    assert p.read_bytes() == before

def test_users_errors(tmp_path):
    with pytest.raises(DataFormatError) as e: read_users(write(tmp_path, 'users.txt', '5\n7\nabc\n'))
    assert e.value.line == 3
    with pytest.raises(DataFormatError, match='duplicate') as e: read_users(write(tmp_path, 'users.txt', '5\n7\n5\n'))
    assert e.value.line == 3

def test_titles_quirks(tmp_path):
    p = write(tmp_path, 'movie_titles.txt', '1,2003,Dinosaur Planet\n2,NULL,Love, Actually, Again\n3,1999,Amélie Café\n\n')
    t = read_titles(p)
    assert t['title'].tolist() == ['Dinosaur Planet', 'Love, Actually, Again', 'Amélie Café']
    assert t['year'].isna().tolist() == [False, True, False]
    assert t.attrs['encoding'] == 'cp1252'
    with pytest.raises(DataFormatError) as e: read_titles(write(tmp_path, 'm.txt', '1,2003,A\n2 2004 B\n'))
    assert e.value.line == 2
    with pytest.raises(DataFormatError, match='year'): read_titles(write(tmp_path, 'm.txt', '1,20x3,A\n'))

def test_unknown_user_policy(tmp_path, gen_dir):
    import shutil
    d = tmp_path / 'c'; shutil.copytree(gen_dir, d)
    (d / 'manifest.json').unlink()
    with open(d / 'netflix_test.txt', 'a') as f: f.write('999999999 1 3 2005-01-01\n')
    with pytest.raises(DataFormatError, match='not in users.txt') as e: read_course_files(d, cache=False)
    assert e.value.line is not None
    data = read_course_files(d, on_unknown_user='drop', cache=False)
    assert data.n_users == SMALL.n_users

def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing course files'): read_course_files(tmp_path)

# ---------------------------------------------------------------- generator
def test_generator_format_and_determinism(tmp_path, gen_dir):
    other = generate_netflix_like(tmp_path / 'again', SMALL, progress=False)
    for f in COURSE_FILES: assert (gen_dir / f).read_bytes() == (other / f).read_bytes()
    raw = (gen_dir / 'movie_titles.txt').read_bytes()
    with pytest.raises(UnicodeDecodeError): raw.decode('utf-8')        # ISO-8859-1 accents like the real file
    assert raw.endswith(b'\n\n') and b',NULL,' in raw
    first = (gen_dir / 'netflix_train.txt').read_text().splitlines()[0].split(' ')
    assert len(first) == 4 and first[3][4] == '-' and first[2] in '12345'
    assert (gen_dir / 'netflix_train.txt').read_text().endswith('\n\n')

def test_generator_refuses_to_overwrite(tmp_path, gen_dir):
    with pytest.raises(FileExistsError): generate_netflix_like(gen_dir, SMALL.small(seed=5), progress=False)
    real = tmp_path / 'real'; real.mkdir(); (real / 'users.txt').write_text('1\n')
    with pytest.raises(FileExistsError, match='not made by the generator'): generate_netflix_like(real, SMALL, progress=False)

def test_generated_data_and_noise_floor(gen_dir):
    data = load_course_data(gen_dir)
    assert data.source == 'generated' and data.truth is not None
    assert data.X_train.shape == data.X_test.shape == (SMALL.n_users, SMALL.n_movies)
    n = len(data.train) + len(data.test)
    assert 0.8 * SMALL.n_ratings < n < 1.2 * SMALL.n_ratings
    assert 0.15 < len(data.test) / n < 0.25
    floor = noise_floor(data)
    g = float(np.sqrt(np.mean((data.test.rating - data.train.rating.mean()) ** 2)))
    assert 0.3 < floor < g            # the truth predicts better than the global mean
    e = expected_rating(data.truth, data.test.user[:5], data.test.item[:5], data.test.day[:5])
    assert ((e >= 1) & (e <= 5)).all()

def test_cache_invalidated_by_content(tmp_path, gen_dir, monkeypatch):
    import shutil
    monkeypatch.setenv('THU_BDML_CACHE', str(tmp_path / 'cache'))
    d = tmp_path / 'c'; shutil.copytree(gen_dir, d); (d / 'manifest.json').unlink()
    a = read_course_files(d)
    assert (tmp_path / 'cache').exists()
    lines = (d / 'netflix_test.txt').read_text().splitlines()
    (d / 'netflix_test.txt').write_text('\n'.join(lines[:-3]) + '\n')
    b = read_course_files(d)
    assert len(b.test) == len(a.test) - 2 or len(b.test) == len(a.test) - 3

# ---------------------------------------------------------------- Interactions
def test_interactions_checks():
    with pytest.raises(ValueError, match='out of range'): Interactions([0, 5], [0, 1], [1, 2], None, 3, 3)
    with pytest.raises(ValueError, match='same length'): Interactions([0, 1], [0], [1, 2], None, 3, 3)
    with pytest.raises(ValueError, match='NaN'): Interactions([0], [0], [np.nan], None, 3, 3)
    x = Interactions([0, 2], [1, 0], [4, 5], [1, 2], 3, 2)
    assert x.csr().toarray().tolist() == [[0, 4], [0, 0], [5, 0]]
    assert len(x.subset(np.array([1]))) == 1 and len(x.concat(x)) == 4

# ---------------------------------------------------------------- MovieLens and folds
def test_movielens_100k_from_wheel():
    d = load_movielens('100k')
    assert len(d.train) == 100_000 and d.n_users == 943 and d.n_items == 1682
    assert d.titles['title'].notna().all() and d.test is None
    with pytest.raises(ValueError, match='variant'): load_movielens('10m')

def test_movielens_official_files_first(tmp_path):
    (tmp_path / 'ml-100k').mkdir()
    (tmp_path / 'ml-100k' / 'u.data').write_text('1\t10\t4\t881250949\n2\t10\t5\t881250950\n2\t11\t3\t881250951\n')
    (tmp_path / 'ml-100k' / 'u.item').write_bytes('10|Caf\xe9 (1995)|x\n11|B (1996)|y\n'.encode('latin-1'))
    with pytest.warns(UserWarning):
        d = load_movielens('100k', folder=tmp_path)
    assert len(d.train) == 3 and d.titles['title'].tolist() == ['Café (1995)', 'B (1996)']
    assert d.titles['year'].tolist() == [1995, 1996]

def test_kfold_and_holdout():
    folds = kfold_splits(103, k=5, seed=0)
    val = np.concatenate([v for _, v in folds])
    assert sorted(val.tolist()) == list(range(103))
    for tr, va in folds: assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 103
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, kfold_splits(103, 5, 0)))
    with pytest.raises(ValueError): kfold_splits(10, k=1)
    tr, va = holdout_split(100, 0.1)
    assert len(va) == 10 and len(np.intersect1d(tr, va)) == 0
    for bad in (0, 1, -0.5, 1.5):
        with pytest.raises(ValueError): holdout_split(100, bad)

# ---------------------------------------------------------------- Netflix Prize format
def test_netflix_prize_reader(tmp_path):
    p = write(tmp_path, 'mv_0000001.txt', '1:\n1488844,3,2005-09-06\n822109,5,2005-05-13\n2:\n885013,4,2005-10-19\n')
    df = read_netflix_prize(p)
    assert df['movie'].tolist() == [1, 1, 2] and df['rating'].tolist() == [3, 5, 4]
    with pytest.raises(DataFormatError) as e: read_netflix_prize(write(tmp_path, 'b.txt', '822109,5,2005-05-13\n'))
    assert e.value.line == 1
    with pytest.raises(DataFormatError) as e: read_netflix_prize(write(tmp_path, 'c.txt', '1:\n8,9,2005-05-13\n'))
    assert e.value.line == 2

# ---------------------------------------------------------------- download against a local server
class RangeHandler(http.server.SimpleHTTPRequestHandler):
    payload = os.urandom(300_000)
    def log_message(self, *a): pass
    def do_GET(self):
        data, start = self.payload, 0
        rng = self.headers.get('Range')
        if rng:
            start = int(rng.split('=')[1].split('-')[0])
            self.send_response(206); self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
        else: self.send_response(200)
        self.send_header('Content-Length', str(len(data) - start)); self.end_headers()
        self.wfile.write(data[start:])

@pytest.fixture()
def server():
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), RangeHandler)
    th = threading.Thread(target=srv.serve_forever, daemon=True); th.start()
    yield f'http://127.0.0.1:{srv.server_address[1]}/file.bin'
    srv.shutdown()

def test_download_resume_and_checksum(tmp_path, server):
    payload = RangeHandler.payload
    sha = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / 'file.bin'
    (tmp_path / 'file.bin.part').write_bytes(payload[:123_456])          # an interrupted download
    assert download_file(server, dest, sha256=sha, progress=False).read_bytes() == payload
    assert not (tmp_path / 'file.bin.part').exists()
    with pytest.raises(ValueError, match='mismatch'): download_file(server, tmp_path / 'x.bin', sha256='0' * 64, progress=False)
    assert not (tmp_path / 'x.bin').exists()
    with pytest.raises(ConnectionError): download_file('http://127.0.0.1:9/none', tmp_path / 'y.bin', progress=False, timeout=2)

# ---------------------------------------------------------------- no import-time side effects
def test_import_has_no_side_effects(tmp_path):
    code = ("import os, json; before = dict(os.environ); import importlib, pkgutil, thu_big_data_ml as p\n"
            "mods = [m.name for m in pkgutil.iter_modules(p.__path__) if not m.name.startswith('_')]\n"
            "[importlib.import_module('thu_big_data_ml.' + m) for m in mods]\n"
            "print(json.dumps({'env_same': dict(os.environ) == before, 'mods': mods}))")
    env = {**os.environ, 'THU_BDML_DATA': str(tmp_path / 'd'), 'THU_BDML_CACHE': str(tmp_path / 'c')}
    out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    import json; res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res['env_same'] and 'data' in res['mods']
    assert sorted(p.name for p in tmp_path.iterdir()) == []
