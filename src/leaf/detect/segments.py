"""Split a response into K reasoning segments, for response-level detection.

Boundaries are looked for in order of strength, and the first kind that
offers enough candidates is used:

1. blank lines (a paragraph break);
2. line breaks before a numbered or bulleted step (``Step 3:``, ``2.``, ``1)``,
   ``-``, ``*``);
3. any line break;
4. sentence ends (``.``, ``!``, ``?`` followed by white space);
5. any white space (last resort, so every response with K - 1 gaps splits).

Among the candidates of that kind, the K - 1 boundaries nearest to the
balanced positions ``i * len / K`` are taken (in order), so segments are as
even in length as the text allows. A segment starts at the first character
after the white space of its boundary; that white space ends the previous
segment. A response with fewer than K - 1 gaps gives fewer segments.
"""

from __future__ import annotations

import re

from leaf.data.spans import Span


_BOUNDARIES = [
    re.compile(r"\n[ \t]*\n\s*"),
    re.compile(r"\n[ \t]*(?=(?:step\s*\d+\s*[:.)]|\d+\s*[.)]|[-*\u2022])\s)", re.IGNORECASE),
    re.compile(r"\n\s*"),
    re.compile(r"(?<=[.!?])\s+(?=\S)"),
    re.compile(r"\s+(?=\S)"),
]


def _candidates(text: str, pattern: re.Pattern[str]) -> list[int]:
    ends = {m.end() for m in pattern.finditer(text)}
    return sorted(p for p in ends if 0 < p < len(text) and text[:p].strip())


def _pick(candidates: list[int], k: int, length: int) -> list[int] | None:
    """K - 1 increasing candidates nearest to the balanced cut points, or None."""
    chosen: list[int] = []
    for i in range(1, k):
        target = i * length / k
        remaining_needed = k - 1 - i  # cuts still to place after this one
        options = [c for c in candidates if (not chosen or c > chosen[-1])]
        if remaining_needed:
            options = options[: len(options) - remaining_needed]
        if not options:
            return None
        chosen.append(min(options, key=lambda c: (abs(c - target), c)))
    return chosen


def segment_response(response: str, k: int = 2) -> list[Span]:
    """``[start, end)`` character ranges of up to ``k`` consecutive segments covering ``response``."""
    if k < 1:
        raise ValueError("k must be >= 1")
    if k == 1:
        return [(0, len(response))]
    for pattern in _BOUNDARIES:
        cuts = _pick(_candidates(response, pattern), k, len(response))
        if cuts is not None:
            break
    else:
        # fewer gaps than k - 1: as many segments as the white space allows
        cuts = _candidates(response, _BOUNDARIES[-1])
    points = [0, *cuts, len(response)]
    return [(points[i], points[i + 1]) for i in range(len(points) - 1)]
