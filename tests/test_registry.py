"""The dataset registry the report reads (core.note_dataset): every loader notes what it returns, also from a cache."""
import pytest

from thu_big_data_ml import data as D
from thu_big_data_ml.core import forget_datasets, note_dataset, noted_datasets


@pytest.fixture(autouse=True)
def clean_registry(tmp_path, monkeypatch):
    monkeypatch.setenv('THU_BDML_CACHE', str(tmp_path / 'cache'))
    forget_datasets()
    yield
    forget_datasets()


def test_note_returns_object_and_later_note_replaces():
    from types import SimpleNamespace
    a = SimpleNamespace(name='a', source='generated', n_users=2, n_items=3, train=[1, 2], test=None)
    assert note_dataset(a) is a
    note_dataset(SimpleNamespace(name='a', source='generated', n_users=2, n_items=3, train=[1], test=[2, 3]))
    note_dataset(SimpleNamespace(name='a', source='movielens', n_users=1, n_items=1, train=[1], test=None))
    assert noted_datasets() == [
        {'name': 'a', 'source': 'generated', 'n_users': 2, 'n_items': 3, 'n_train': 1, 'n_test': 2},
        {'name': 'a', 'source': 'movielens', 'n_users': 1, 'n_items': 1, 'n_train': 1, 'n_test': None}]
    noted_datasets()[0]['name'] = 'changed'                 # copies: the registry is not changed through them
    assert noted_datasets()[0]['name'] == 'a'
    with pytest.raises(TypeError, match='name'): note_dataset(42)


def test_small_course_data_and_movielens_noted(tmp_path, monkeypatch):
    monkeypatch.setenv('THU_BDML_DATA', str(tmp_path / 'data'))
    small = D.load_course_data(scale='small', progress=False)
    ml = D.load_movielens('100k')
    assert noted_datasets() == [
        {'name': 'movielens-100k', 'source': 'movielens', 'n_users': 943, 'n_items': 1682, 'n_train': 100_000,
         'n_test': None},
        {'name': 'netflix-generated-small', 'source': 'generated', 'n_users': small.n_users, 'n_items': small.n_items,
         'n_train': len(small.train), 'n_test': len(small.test)}]
    assert ml.n_users == 943 and len(small.train) + len(small.test) == D.NetflixShape().small().n_ratings
    forget_datasets()
    assert noted_datasets() == []


def test_cached_second_load_notes_again(tmp_path, monkeypatch):
    folder = D.generate_netflix_like(tmp_path / 'gen', D.NetflixShape().small(n_users=80, n_movies=90, n_ratings=3000),
                                     progress=False)
    reads = []
    real = D._read_course
    monkeypatch.setattr(D, '_read_course', lambda *a, **k: reads.append(a) or real(*a, **k))
    first = noted_after(lambda: D.load_course_data(folder))
    assert len(reads) == 1
    second = noted_after(lambda: D.load_course_data(folder))
    assert len(reads) == 1, 'the second load should come from the cache'
    assert first == second and first[0]['name'] == 'netflix-generated' and first[0]['n_users'] == 80


def test_course_files_read_directly_are_noted_as_course(tmp_path):
    import shutil
    folder = D.generate_netflix_like(tmp_path / 'gen', D.NetflixShape().small(n_users=50, n_movies=60, n_ratings=1500),
                                     progress=False)
    real = tmp_path / 'real'; real.mkdir()
    for f in D.COURSE_FILES: shutil.copy(folder / f, real / f)
    d = D.load_course_data(real)
    assert [(x['name'], x['source'], x['n_train']) for x in noted_datasets()] == [('netflix-course', 'course', len(d.train))]


def test_load_prize_noted(tmp_path):
    from thu_big_data_ml.prize import PrizeShape, generate_prize, load_prize
    shape = PrizeShape().small(n_users=150, n_movies=40, n_titles=40, n_ratings=3_000, n_probe=90)
    d = load_prize(generate_prize(tmp_path / 'p', shape, progress=False))
    (rec,) = noted_datasets()
    assert rec == {'name': d.name, 'source': d.source, 'n_users': d.n_users, 'n_items': d.n_items,
                   'n_train': len(d.train), 'n_test': len(d.test)} and rec['n_test'] == 90


def noted_after(load):
    forget_datasets(); load(); return noted_datasets()
