"""Lab 6.6's translation task, generated offline: a date written in one of many human formats -> ISO 8601.

"December 2, 2026", "2 Dec 2026", "Wed, 2 Dec 2026", "12/02/2026" (US, month first), "02.12.2026" (day
first), "2026/12/02" and "2026년 12월 2일" all translate to "2026-12-02". The structure is real: month names
and abbreviations must be mapped to numbers, the separator tells whether the day or the month comes first,
one-digit days must be padded, and the weekday is redundant (the model may ignore it).

Public API
----------
- ``FORMATS`` (name -> formatter), :func:`format_date`, :func:`iso`; :func:`parse_date`, the rule-based oracle.
- :class:`CharVocab` (``SOURCE_VOCAB``, ``TARGET_VOCAB``): characters <-> ids with PAD, BOS, EOS.
- :func:`date_splits` -> :class:`DateSplits` of :class:`DatePairs`: train / val / test that share no calendar
  date (so no date string either), and :meth:`DatePairs.tensors` for padded id tensors.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

MONTHS = "January February March April May June July August September October November December".split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()


def _md(d: dt.date) -> tuple[str, str, int, int]:
    return MONTHS[d.month - 1], MONTHS[d.month - 1][:3], d.day, d.year


# One formatter per way of writing a date. Numeric formats carry their order in the separator ("/" month
# first as in the US, "." day first as in Germany, year first with "/"), so no input is ambiguous.
FORMATS: dict[str, Callable[[dt.date], str]] = {
    "month d, yyyy": lambda d: f"{_md(d)[0]} {d.day}, {d.year}",
    "mon d, yyyy": lambda d: f"{_md(d)[1]} {d.day}, {d.year}",
    "d month yyyy": lambda d: f"{d.day} {_md(d)[0]} {d.year}",
    "d mon yyyy": lambda d: f"{d.day} {_md(d)[1]} {d.year}",
    "MON D YYYY": lambda d: f"{_md(d)[1].upper()} {d.day} {d.year}",
    "weekday, month d, yyyy": lambda d: f"{WEEKDAYS[d.weekday()]}, {_md(d)[0]} {d.day}, {d.year}",
    "wkd, d mon yyyy": lambda d: f"{WEEKDAYS[d.weekday()][:3]}, {d.day} {_md(d)[1]} {d.year}",
    "mm/dd/yyyy": lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}",
    "dd.mm.yyyy": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    "d.m.yyyy": lambda d: f"{d.day}.{d.month}.{d.year}",
    "yyyy/mm/dd": lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}",
    "korean": lambda d: f"{d.year}년 {d.month}월 {d.day}일",
}


def format_date(d: dt.date, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown date format {fmt!r}; use one of {list(FORMATS)}.")
    return FORMATS[fmt](d)


# strptime patterns of FORMATS, tried in this order (the oracle below): none of them parses another
# format's string, so the first that fits is the date.
_PATTERNS = (
    "%B %d, %Y",
    "%b %d, %Y",
    "%d %B %Y",
    "%d %b %Y",
    "%b %d %Y",
    "%A, %B %d, %Y",
    "%a, %d %b %Y",
    "%m/%d/%Y",
    "%d.%m.%Y",
    "%Y/%m/%d",
    "%Y년 %m월 %d일",
)


def parse_date(text: str) -> dt.date:
    """The hand-written oracle: the date a string of any of ``FORMATS`` names (strptime with the known
    patterns; month names in any case). Raises ValueError on a string in none of them."""
    for pattern in _PATTERNS:
        try:
            return dt.datetime.strptime(text, pattern).date()
        except ValueError:
            continue
    raise ValueError(f"{text!r} is in none of the known date formats {list(FORMATS)}.")


def iso(d: dt.date) -> str:
    """ISO 8601 calendar date, YYYY-MM-DD (the translation target)."""
    return d.isoformat()


class CharVocab:
    """Characters <-> ids. Ids 0, 1, 2 are PAD, BOS, EOS; an unknown character raises (no silent UNK)."""

    PAD, BOS, EOS = 0, 1, 2

    def __init__(self, chars: str):
        if len(set(chars)) != len(chars):
            raise ValueError("the vocabulary's characters must be distinct.")
        self.chars = chars
        self.index = {c: i + 3 for i, c in enumerate(chars)}

    def __len__(self) -> int:
        return len(self.chars) + 3

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        missing = sorted(set(text) - self.index.keys())
        if missing:
            raise ValueError(
                f"characters {missing} are not in the vocabulary; add them to its character list."
            )
        return [self.BOS] * bos + [self.index[c] for c in text] + [self.EOS] * eos

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text, stopping at the first EOS; PAD and BOS are dropped."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.EOS:
                break
            if i >= 3:
                out.append(self.chars[i - 3])
        return "".join(out)

    def tokens(self, text: str) -> list[str]:
        """The characters as figure labels: a space shows as '␣'."""
        return ["␣" if c == " " else c for c in text]


_SOURCE_CHARS = "".join(
    sorted(
        set("".join(MONTHS + WEEKDAYS)) | set("".join(MONTHS).upper()) | set("0123456789 ,./") | set("년월일")
    )
)
SOURCE_VOCAB = CharVocab(_SOURCE_CHARS)
TARGET_VOCAB = CharVocab("0123456789-")


@dataclass(frozen=True)
class DatePairs:
    dates: list[dt.date]
    formats: list[str]
    sources: list[str]
    targets: list[str]

    def __len__(self) -> int:
        return len(self.sources)

    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(src (n, S), src_lengths (n,), tgt (n, T))``: source ids right-padded with PAD; targets
        BOS + 10 characters + EOS (T = 12)."""
        src = [SOURCE_VOCAB.encode(s) for s in self.sources]
        lengths = torch.tensor([len(s) for s in src])
        padded = torch.full((len(src), int(lengths.max())), CharVocab.PAD, dtype=torch.long)
        for i, s in enumerate(src):
            padded[i, : len(s)] = torch.tensor(s)
        tgt = torch.tensor([TARGET_VOCAB.encode(t, bos=True, eos=True) for t in self.targets])
        return padded, lengths, tgt

    def source_lengths(self) -> list[int]:
        return [len(s) for s in self.sources]


@dataclass(frozen=True)
class DateSplits:
    train: DatePairs
    val: DatePairs
    test: DatePairs


def date_splits(
    n_train: int,
    n_val: int,
    n_test: int,
    *,
    seed: int = 0,
    first_year: int = 1900,
    last_year: int = 2099,
    formats: Sequence[str] | None = None,
) -> DateSplits:
    """Three disjoint sets of (formatted date, ISO date) pairs, each date in one format drawn uniformly.

    Calendar dates are drawn without replacement from ``first_year``-01-01 .. ``last_year``-12-31 and dealt
    to the splits, so a test date is never seen in training in any format (and no string is in two splits).
    """
    formats = list(FORMATS) if formats is None else list(formats)
    for f in formats:
        format_date(dt.date(2000, 1, 1), f)  # unknown names raise here
    start, end = dt.date(first_year, 1, 1), dt.date(last_year, 12, 31)
    days = (end - start).days + 1
    total = n_train + n_val + n_test
    if min(n_train, n_val, n_test) < 1 or total > days:
        raise ValueError(f"need 1 <= each split and n_train + n_val + n_test <= {days} days, got {total}.")
    rng = random.Random(seed)
    chosen = [start + dt.timedelta(days=k) for k in rng.sample(range(days), total)]

    def pairs(ds: list[dt.date]) -> DatePairs:
        fmts = [rng.choice(formats) for _ in ds]
        return DatePairs(ds, fmts, [format_date(d, f) for d, f in zip(ds, fmts)], [iso(d) for d in ds])

    return DateSplits(
        pairs(chosen[:n_train]), pairs(chosen[n_train : n_train + n_val]), pairs(chosen[n_train + n_val :])
    )
