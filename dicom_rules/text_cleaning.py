"""Cleaning free text (the C action on descriptors): identifying words and numbers are blotted out.

A descriptor such as "CT head for NGUYEN THI PHI, MRN 123456" keeps its
meaning ("CT head for ***, MRN ***"). Removed are every word of the
instance's own identifying values (names, IDs, accession, institution and so
on, compared without case or accents), any run of five or more digits, and
anything shaped like a date.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import cache

MASK = "***"
_DIGITS = re.compile(r"\d[\d\-./ ]{3,}\d")
_WORD = re.compile(r"\w+", re.UNICODE)


@cache
def _fold_char(ch: str) -> str:
    if ch in "đĐ":
        return "d"
    return unicodedata.normalize("NFD", ch)[0].lower()


def fold(text: str) -> str:
    """Lower case without accents, one character for one, so positions carry over to the original."""
    return "".join(_fold_char(ch) for ch in text)


class TextCleaner:
    def __init__(self, identifying_values: Iterable[str]) -> None:
        words: set[str] = set()
        for value in identifying_values:
            for word in _WORD.findall(fold(unicodedata.normalize("NFC", value))):
                if len(word) >= 2:
                    words.add(word)
        self.words = frozenset(words)

    def clean(self, text: str) -> str:
        text = unicodedata.normalize("NFC", text)
        folded = fold(text)
        spans = [m.span() for m in _WORD.finditer(folded) if m.group() in self.words]
        spans += [m.span() for m in _DIGITS.finditer(folded) if sum(c.isdigit() for c in m.group()) >= 5]
        if not spans:
            return text
        spans.sort()
        out, last = [], 0
        for start, end in spans:
            start = max(start, last)
            if start >= end:
                continue
            out.append(text[last:start])
            out.append(MASK)
            last = end
        out.append(text[last:])
        return re.sub(r"(\*\*\*[\s^\-./_]*)+\*\*\*", MASK, "".join(out))
