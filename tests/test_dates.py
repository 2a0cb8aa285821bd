"""The date-translation data of lab 6.6, against Python's datetime (an independent reference)."""

import datetime as dt

import pytest

from common.dates import (
    FORMATS,
    SOURCE_VOCAB,
    TARGET_VOCAB,
    CharVocab,
    date_splits,
    format_date,
    iso,
    parse_date,
)


def test_formats_against_strftime():
    d = dt.date(2026, 12, 2)  # a Wednesday
    assert format_date(d, "month d, yyyy") == d.strftime("%B ") + "2, 2026"
    assert format_date(d, "wkd, d mon yyyy") == d.strftime("%a, ") + "2 " + d.strftime("%b %Y")
    assert format_date(d, "weekday, month d, yyyy") == d.strftime("%A, %B ") + "2, 2026"
    assert format_date(d, "mm/dd/yyyy") == d.strftime("%m/%d/%Y") == "12/02/2026"
    assert format_date(d, "dd.mm.yyyy") == d.strftime("%d.%m.%Y")
    assert format_date(d, "yyyy/mm/dd") == d.strftime("%Y/%m/%d")
    assert format_date(d, "korean") == "2026년 12월 2일"
    assert iso(d) == "2026-12-02"
    with pytest.raises(ValueError, match="unknown date format"):
        format_date(d, "dd-mm")


def test_every_format_parses_back_to_the_same_date():
    """No format is ambiguous: each string determines its date (parsed by strptime or by hand)."""
    parse = {
        "month d, yyyy": "%B %d, %Y",
        "mon d, yyyy": "%b %d, %Y",
        "d month yyyy": "%d %B %Y",
        "d mon yyyy": "%d %b %Y",
        "MON D YYYY": "%b %d %Y",
        "weekday, month d, yyyy": "%A, %B %d, %Y",
        "wkd, d mon yyyy": "%a, %d %b %Y",
        "mm/dd/yyyy": "%m/%d/%Y",
        "dd.mm.yyyy": "%d.%m.%Y",
        "d.m.yyyy": "%d.%m.%Y",
        "yyyy/mm/dd": "%Y/%m/%d",
        "korean": "%Y년 %m월 %d일",
    }
    assert set(parse) == set(FORMATS)
    for d in (dt.date(1900, 1, 1), dt.date(1999, 9, 30), dt.date(2099, 12, 31), dt.date(2024, 2, 29)):
        for name, pattern in parse.items():
            assert dt.datetime.strptime(format_date(d, name), pattern).date() == d, name


def test_splits_are_disjoint_by_date_and_by_string():
    s = date_splits(3000, 500, 500, seed=1)
    sets = [set(p.dates) for p in (s.train, s.val, s.test)]
    assert [len(x) for x in sets] == [3000, 500, 500], "no date twice within a split"
    strings = [set(p.sources) for p in (s.train, s.val, s.test)]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not sets[a] & sets[b] and not strings[a] & strings[b]
    assert all(t == d.isoformat() for t, d in zip(s.test.targets, s.test.dates))
    assert set(s.train.formats) == set(FORMATS), "every format appears in training"
    assert date_splits(3000, 500, 500, seed=1).test.sources == s.test.sources, "seeded"
    with pytest.raises(ValueError, match="each split"):
        date_splits(10, 0, 5)


def test_tensors_pad_and_round_trip():
    s = date_splits(50, 5, 5, seed=0).train
    src, lengths, tgt = s.tensors()
    assert src.shape == (50, max(len(x) for x in s.sources)) and tgt.shape == (50, 12)
    for i in range(50):
        assert SOURCE_VOCAB.decode(src[i]) == s.sources[i]
        assert int(lengths[i]) == len(s.sources[i]) and (src[i, lengths[i] :] == CharVocab.PAD).all()
        assert tgt[i, 0] == CharVocab.BOS and tgt[i, -1] == CharVocab.EOS
        assert TARGET_VOCAB.decode(tgt[i, 1:]) == s.targets[i]
    with pytest.raises(ValueError, match="not in the vocabulary"):
        TARGET_VOCAB.encode("2026/12/02")


def test_the_oracle_parses_every_format():
    s = date_splits(400, 5, 5, seed=2).train
    assert all(parse_date(text) == d for text, d in zip(s.sources, s.dates))
    with pytest.raises(ValueError, match="none of the known"):
        parse_date("2 Decembre 2026")
