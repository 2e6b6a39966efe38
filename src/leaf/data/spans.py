"""Character spans, the unit every stage speaks in: ``[start, end)`` offsets into a sample's field.

The one home of the span types and of the small operations on them that
several stages need (merging, trimming white space, overlap tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: ``[start, end)`` character offsets into one text.
Span = tuple[int, int]
#: ``(field, start, end)`` with field ``"instruction"`` or ``"response"``.
FieldSpan = tuple[str, int, int]


def merge_overlapping(spans: Iterable[Span]) -> list[Span]:
    """Sort spans and merge overlapping or touching ones; empty or inverted spans are dropped."""
    out: list[list[int]] = []
    for s, e in sorted(spans):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def tight(start: int, end: int, text: str) -> Span:
    """``[start, end)`` without the white space at either end."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def overlaps(start: int, end: int, spans: Iterable[Sequence[int]]) -> bool:
    """Does ``[start, end)`` share a character with any of ``spans``?"""
    return any(start < e and end > s for s, e in spans)
