"""Chapter 12 (thu_big_data_ml.prize): the Prize-layout generator (deterministic, layout, resumable, never touches
foreign files), the fast reader against the reference reader `data.read_netflix_prize` (equal frames, equal errors
on hostile files), the Parquet copy's invalidation, load_prize, and the Spark path (skipped without pyspark/Java)."""
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from thu_big_data_ml import prize
from thu_big_data_ml.data import DataFormatError, noise_floor, read_netflix_prize
from thu_big_data_ml.prize import PrizeShape, generate_prize, load_prize, prize_key, prize_parquet, read_prize_ratings

SHAPE = PrizeShape().small(n_users=150, n_movies=40, n_titles=40, n_ratings=3_000, n_probe=90)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('THU_BDML_CACHE', str(tmp_path / 'cache'))


def gen(folder, shape=SHAPE, **kw):
    return generate_prize(folder, shape, progress=False, **kw)


def listing(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def test_generator_is_deterministic_and_has_the_prize_layout(tmp_path):
    a, b = gen(tmp_path / 'a'), gen(tmp_path / 'b')
    la, lb = listing(a), listing(b)
    assert la == lb
    names = sorted(n for n in la if n.startswith('training_set/'))
    assert names == [f'training_set/mv_{m:07d}.txt' for m in range(1, 41)]
    assert set(la) == set(names) | {'probe.txt', 'movie_titles.txt', 'truth.npz', 'manifest.json'}
    first = la[names[0]].decode().splitlines()
    assert first[0] == '1:' and all(len(r.split(',')) == 3 for r in first[1:])
    ref = read_netflix_prize([a / n for n in names])
    assert len(ref) == SHAPE.n_ratings and not ref.duplicated(['user', 'movie']).any()
    assert ref['user'].nunique() == SHAPE.n_users and ref['user'].max() <= SHAPE.max_user_id
    assert ref['user'].max() - ref['user'].min() > 10 * SHAPE.n_users          # sparse ids, like the Prize's
    probe = prize.read_probe(a / 'probe.txt')
    assert len(probe) == SHAPE.n_probe
    assert set(zip(probe['movie'], probe['user'])) <= set(zip(ref['movie'], ref['user']))
    assert la['movie_titles.txt'].split(b'\n')[0].split(b',')[0] == b'1'
    man = json.loads(la['manifest.json'])
    assert man['state'] == 'complete' and man['generator'] == prize.PRIZE_GENERATOR and len(man['files']) == 43
    c = gen(tmp_path / 'c', PrizeShape(**{**SHAPE.__dict__, 'seed': 1}))
    assert listing(c)['training_set/mv_0000001.txt'] != la['training_set/mv_0000001.txt']


def test_marginal_and_noise_floor_follow_the_model(tmp_path):
    u, i, r, d, p, truth = prize.simulate_prize(PrizeShape().small(n_ratings=20_000), progress=False)
    share = np.bincount(r, minlength=6)[1:] / len(r)
    assert np.abs(share - np.array(SHAPE.marginal)).max() < 0.01
    data = load_prize(gen(tmp_path / 'p'))
    nf = noise_floor(data)
    mean_rmse = float(np.sqrt(np.mean((data.test.rating - data.train.rating.mean()) ** 2)))
    assert 0.4 < nf < mean_rmse


def test_a_rerun_resumes_after_an_interruption(tmp_path, monkeypatch):
    clean = listing(gen(tmp_path / 'clean'))
    real, calls = prize._write_atomic, []

    def dying(path, data):
        calls.append(path.name)
        if len(calls) == 15: raise KeyboardInterrupt('killed')
        real(path, data)
    monkeypatch.setattr(prize, '_write_atomic', dying)
    with pytest.raises(KeyboardInterrupt):
        gen(tmp_path / 'p')
    man = json.loads((tmp_path / 'p' / 'manifest.json').read_text())
    assert man['state'] == 'partial' and len(prize._journal(tmp_path / 'p')) == 13    # manifest + 13 movie files
    monkeypatch.setattr(prize, '_write_atomic', real)
    written = []
    monkeypatch.setattr(prize, '_write_atomic', lambda p, d: (written.append(p.name), real(p, d)))
    gen(tmp_path / 'p')
    assert not [w for w in written if w in {f'mv_{m:07d}.txt' for m in range(1, 14)}]     # journalled files kept
    assert listing(tmp_path / 'p') == clean
    written.clear(); gen(tmp_path / 'p')
    assert written == []                                                             # complete: reused as is


def test_refuses_foreign_files_and_leaves_strangers_alone(tmp_path):
    f = tmp_path / 'f'; f.mkdir(); (f / 'probe.txt').write_text('1:\n5\n')
    with pytest.raises(FileExistsError, match='not made by the generator'):
        gen(f)
    assert (f / 'probe.txt').read_text() == '1:\n5\n' and not (f / 'training_set').exists()
    g = tmp_path / 'g'; g.mkdir(); (g / 'manifest.json').write_text(json.dumps({'generator': 'someone else'}))
    with pytest.raises(FileExistsError, match='not written by the Prize generator'):
        gen(g)
    h = tmp_path / 'h'; h.mkdir(); (h / 'notes.md').write_text('mine')
    gen(h)
    assert (h / 'notes.md').read_text() == 'mine'
    with pytest.raises(FileExistsError, match='other parameters'):
        gen(h, PrizeShape(**{**SHAPE.__dict__, 'seed': 3}))
    victim = h / 'training_set' / 'mv_0000002.txt'; victim.write_bytes(victim.read_bytes() + b'9,9,2005-01-01\n')
    with pytest.raises(DataFormatError, match='does not match its manifest'):
        gen(h)
    gen(h, overwrite=True)
    name = 'training_set/mv_0000002.txt'
    assert (h / 'notes.md').read_text() == 'mine' and listing(h)[name] == listing(gen(tmp_path / 'x'))[name]


def test_fast_reader_equals_the_reference_on_generated_files(tmp_path, monkeypatch):
    files = sorted((gen(tmp_path / 'p') / 'training_set').glob('mv_*.txt'))
    ref = read_netflix_prize(files)
    def no_fallback(p): raise AssertionError(f'the kernel rejected a generated file: {p}')
    monkeypatch.setattr(prize, 'read_netflix_prize', no_fallback)       # the compiled path reads every file
    pd.testing.assert_frame_equal(read_prize_ratings(files), ref)
    pd.testing.assert_frame_equal(read_prize_ratings(files, batch_bytes=2_000), ref)     # many batches


HOSTILE = {
    'crlf': b'1:\r\n5,3,2005-01-01\r\n6,4,2005-01-02\r\n',
    'bom': b'\xef\xbb\xbf1:\n5,3,2005-01-01\n',
    'blank lines': b'\n1:\n\n5,3,2005-01-01\n\n',
    'two headers': b'1:\n5,3,2005-01-01\n2:\n5,4,2005-01-01\n',
    'leading zeros': b'0001:\n007,3,2005-01-01\n',
    'surrounding spaces': b' 1: \n 5,3,2005-01-01 \n',
    'bad header': b'x1:\n5,3,2005-01-01\n',
    'header id zero': b'0:\n5,3,2005-01-01\n',
    'row before header': b'5,3,2005-01-01\n1:\n',
    'rating 6': b'1:\n5,6,2005-01-01\n',
    'rating 0': b'1:\n5,0,2005-01-01\n',
    'rating 3.5': b'1:\n5,3.5,2005-01-01\n',
    'no such day': b'1:\n5,3,2005-02-30\n',
    'month 13': b'1:\n5,3,2005-13-01\n',
    'leap day ok': b'1:\n5,3,2004-02-29\n',
    'not a leap year': b'1:\n5,3,1900-02-29\n',
    'date before 1900': b'1:\n5,3,1899-12-31\n',
    'date after 2099': b'1:\n5,3,2100-01-01\n',
    'short date': b'1:\n5,3,05-01-01\n',
    'missing field': b'1:\n5,3\n',
    'extra field': b'1:\n5,3,2005-01-01,x\n',
    'spaces inside': b'1:\n5, 3,2005-01-01\n',
    'huge id': b'1:\n' + b'9' * 30 + b',3,2005-01-01\n',
    'id 2^31': b'1:\n2147483648,3,2005-01-01\n',
    'id max': b'1:\n2147483647,3,2005-01-01\n',
    'negative id': b'1:\n-5,3,2005-01-01\n',
    'non-ascii': b'1:\n5,3,2005-01-01\xe9\n',
    'empty file': b'',
    'header only': b'1:\n',
    'blank only': b'\n \n',
    'no final newline': b'1:\n5,3,2005-01-01',
    'lone CR': b'1:\r5,3,2005-01-01\n',
}


def outcome(reader, path):
    try: return reader(path)
    except DataFormatError as e: return ('error', str(e), e.line)


@pytest.mark.parametrize('name', list(HOSTILE))
def test_same_frame_or_same_error_as_the_reference(tmp_path, name):
    p = tmp_path / 'mv_0000001.txt'; p.write_bytes(HOSTILE[name])
    fast, ref = outcome(read_prize_ratings, p), outcome(read_netflix_prize, p)
    if isinstance(ref, tuple): assert fast == ref
    else: pd.testing.assert_frame_equal(fast, ref)


def test_a_bad_file_among_good_ones_is_named(tmp_path):
    files = sorted((gen(tmp_path / 'p') / 'training_set').glob('mv_*.txt'))
    files[7].write_bytes(files[7].read_bytes() + b'12,7,2005-01-01\n')
    with pytest.raises(DataFormatError, match='mv_0000008.txt') as e:
        read_prize_ratings(files)
    assert e.value.line == len(files[7].read_bytes().splitlines())


def test_binary_copy_is_invalidated_by_a_changed_file(tmp_path):
    folder = gen(tmp_path / 'p')
    first = prize_parquet(folder)
    assert prize_parquet(folder) == first                          # cached
    data = load_prize(folder)
    assert len(data.train) + len(data.test) == SHAPE.n_ratings and len(data.test) == SHAPE.n_probe
    f = folder / 'training_set' / 'mv_0000003.txt'
    st = f.stat(); body = f.read_bytes()
    swapped = body.replace(b',1,', b',2,', 1) if b',1,' in body else body.replace(b',2,', b',1,', 1)
    f.write_bytes(swapped)                                          # same size, new content and mtime
    second = prize_parquet(folder)
    assert second != first
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))                # same size and mtime: the fast key cannot see it
    assert prize_key(folder) == first.parent.name
    assert prize_key(folder, verify=True) != prize_key(folder)      # the content key does
    f.write_bytes(body); os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = load_prize(folder)
    np.testing.assert_array_equal(r.train.rating, data.train.rating)


def test_load_prize_gives_train_minus_probe_with_truth(tmp_path):
    data = load_prize(gen(tmp_path / 'p'))
    assert data.source == 'generated' and data.truth is not None
    keys = lambda s: set(zip(s.user.tolist(), s.item.tolist()))
    assert not keys(data.train) & keys(data.test)
    assert len(data.titles) == data.n_items and data.n_items == SHAPE.n_movies


def test_user_cf_wall_numbers(tmp_path):
    data = load_prize(gen(tmp_path / 'p'))
    w = prize.user_cf_wall(data, item_cf_seconds=1.0)
    assert w['bytes'] == 4 * 480_189 ** 2 and w['gib'] > 850 and w['hours'] > 0


def test_scaled_shapes_keep_the_prize_proportions():
    s = PrizeShape().scaled(1_000_000)
    assert s.n_ratings == 1_000_000 and s.n_users < 480_189 and s.n_movies < 17_770
    assert PrizeShape().n_ratings == 100_480_507 and PrizeShape().n_probe == 1_408_395
    with pytest.raises(ValueError, match='n_ratings must lie'):
        prize._user_counts(np.ones(10), 5, 3, 0)


def test_hash_uniform_matches_its_reference():
    for seed, u, j in ((0, 0, 0), (3, 5, 7), (11, 479_999, 2 << 40)):
        base = prize._mix(np.uint64((seed * 0x100000001B3 + u) & prize._M64))
        assert abs(prize._unif(base, j) - prize._uniform_ref(seed, u, j)) < 1e-15


def _spark():
    from thu_big_data_ml.compare import spark_available
    return spark_available()


@pytest.mark.skipif(not _spark()[0], reason=f'Spark path skipped: {_spark()[1]}')
def test_spark_als_reads_the_parquet_copy(tmp_path):
    data = load_prize(gen(tmp_path / 'p', PrizeShape().small(n_ratings=20_000, n_probe=400)))
    r = prize.spark_als_parquet(data.info['parquet'], rank=5, reg=0.1, max_iter=5, master='local[2]',
                                checkpoint_dir=str(tmp_path / 'ckpt'))
    assert r['train_ratings'] == len(data.train) and r['probe'] == len(data.test)
    assert np.isfinite(r['rmse']) and r['rmse'] < 1.1, r
    assert r['fit_s'] > 0
