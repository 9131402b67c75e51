"""A list of index rows kept in key order, cheap to fill in bulk and to append to.

Rows arrive in almost sorted order (records are written newest last), so rows are appended
and the list is re-sorted only when it is read after an out-of-order arrival; Timsort does
that in linear time on nearly sorted data. Rows are objects with a ``key`` attribute, or
(``plain=True``) tuples that are their own key.
"""
from __future__ import annotations

import sys
from bisect import bisect_left, bisect_right
from operator import attrgetter
from typing import Any, Iterator

_key = attrgetter("key")


class SortedRows:
    __slots__ = ("_rows", "_sorted", "_key")

    def __init__(self, plain: bool = False) -> None:
        self._rows: list = []
        self._sorted = True
        self._key = None if plain else _key

    def _k(self, row):
        return row if self._key is None else row.key

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row) -> None:
        rows = self._rows
        if rows and self._sorted and self._k(row) < self._k(rows[-1]):
            self._sorted = False
        rows.append(row)

    def remove(self, row) -> None:
        rows = self.rows()
        key = self._k(row)
        i = bisect_left(rows, key, key=self._key)
        while i < len(rows) and self._k(rows[i]) == key:
            if rows[i] is row or self._key is None:
                del rows[i]
                return
            i += 1
        raise ValueError("row not in list")

    def rows(self) -> list:
        """The rows in ascending key order (do not change the list)."""
        if not self._sorted:
            self._rows.sort(key=self._key)
            self._sorted = True
        return self._rows

    def between(self, low: Any = None, high: Any = None) -> list:
        """Rows whose key's first item is within [low, high] (either may be None)."""
        rows = self.rows()
        start = 0 if low is None else bisect_left(rows, (low,), key=self._key)
        end = len(rows) if high is None else bisect_right(rows, (high, "\U0010ffff"), key=self._key)
        return rows[start:end]

    def prefix(self, text: str) -> Iterator:
        """Rows whose key's first item starts with ``text`` (keys are (str, ...) tuples)."""
        rows = self.rows()
        i = bisect_left(rows, (text,), key=self._key)
        while i < len(rows) and self._k(rows[i])[0].startswith(text):
            yield rows[i]
            i += 1


class WordIndex:
    """Ids by word, searchable by word prefix. Names repeat a lot ("almaz", "kebede"), so each
    distinct word is kept and sorted once, with the ids of everyone whose name has it."""

    __slots__ = ("_ids", "_words", "_sorted")

    def __init__(self) -> None:
        self._ids: dict[str, list] = {}
        self._words: list[str] = []
        self._sorted = True

    def add(self, word: str, ident) -> None:
        ids = self._ids.get(word)
        if ids is None:
            word = sys.intern(word)
            self._ids[word] = [ident]
            if self._words and self._sorted and word < self._words[-1]:
                self._sorted = False
            self._words.append(word)
        else:
            ids.append(ident)

    def remove(self, word: str, ident) -> None:
        ids = self._ids.get(word)
        if ids is None:
            return
        ids[:] = [i for i in ids if i != ident]
        if not ids:
            del self._ids[word]
            words = self.words()
            del words[bisect_left(words, word)]

    def words(self) -> list[str]:
        if not self._sorted:
            self._words.sort()
            self._sorted = True
        return self._words

    def prefix(self, text: str) -> Iterator:
        """Ids of every word starting with ``text``."""
        words = self.words()
        i = bisect_left(words, text)
        while i < len(words) and words[i].startswith(text):
            yield from self._ids[words[i]]
            i += 1
