"""The one table of published numbers and aims."""
import pytest

from thu_big_data_ml.reference import AIMS, PUBLISHED, aim, published


def test_every_entry_has_number_protocol_and_source():
    for d, methods in PUBLISHED.items():
        for m, v in methods.items():
            assert set(v) == {'rmse', 'protocol', 'source'}, (d, m)
            assert 0.5 < v['rmse'] < 1.5 and v['protocol'] and v['source'], (d, m)


def test_short_names_and_loud_typos():
    assert published('100k', 'Surprise SVD') == published('ml-100k', 'Surprise SVD') == 0.934
    assert aim('1m') == AIMS['ml-1m'] == 0.845
    with pytest.raises(KeyError, match='known'):
        published('1m', 'SVD')
    with pytest.raises(KeyError, match='unknown dataset'):
        aim('10m')
    with pytest.raises(KeyError, match='no aim'):
        aim('course')


def test_chapters_read_the_table():
    from thu_big_data_ml.cf import SURPRISE_RMSE
    assert SURPRISE_RMSE['KNNBaseline'] == {'100k': 0.931, '1m': 0.895}
