"""Cut character spans out of a text and re-join what is left, cleanly.

Deleting ``"12"`` from ``"who is 12, has"`` naively leaves ``"who is , has"``;
the counterfactual should read ``"who is, has"``. After each cut the white
space on both sides of the hole is reconciled:

* a hole at the start of the text takes the white space after it, one at the
  end the white space before it (the cut opens no new edge white space);
* before closing punctuation (``, . ; : ! ? ) ] } %``) the white space on the
  left of the hole goes, so no gap opens before the mark;
* when both sides have white space, one run is kept: the one holding a line
  break if exactly one does (paragraphs survive), else the left one;
* two cuts separated by white space only are one cut (that white space goes).

Only white space adjacent to a cut span is ever removed besides the spans
themselves; every removed range is reported, so the edit is fully explained.
"""

from __future__ import annotations

from collections.abc import Iterable

from leaf.data.spans import Span, merge_overlapping


CLOSING = set(",.;:!?)]}%")


def prune_text(text: str, spans: Iterable[Span]) -> tuple[str, list[Span]]:
    """Remove ``spans`` (``[start, end)`` offsets) from ``text``.

    Returns the new text and the ``[start, end)`` ranges of ``text`` that were
    removed (the spans, widened by the white space the re-joining dropped;
    sorted, disjoint).
    """
    holes: list[Span] = []
    for s, e in merge_overlapping((max(s, 0), min(e, len(text))) for s, e in spans):
        if holes and not text[holes[-1][1] : s].strip():  # only white space between two cuts: one hole
            holes[-1] = (holes[-1][0], e)
        else:
            holes.append((s, e))
    keep = [True] * len(text)
    for s, e in holes:
        for i in range(s, e):
            keep[i] = False
    # Holes are now separated by visible text, so each one's white space is its own.
    for s, e in holes:
        _reconcile(text, keep, s, e)
    removed: list[Span] = []
    for i, k in enumerate(keep):
        if not k:
            if removed and removed[-1][1] == i:
                removed[-1] = (removed[-1][0], i + 1)
            else:
                removed.append((i, i + 1))
    return "".join(c for c, k in zip(text, keep) if k), removed


def _reconcile(text: str, keep: list[bool], hole_start: int, hole_end: int) -> None:
    """Drop white space around the hole ``[hole_start, hole_end)`` (kept characters only)."""
    left = hole_start
    while left > 0 and keep[left - 1] and text[left - 1].isspace():
        left -= 1
    right = hole_end
    while right < len(text) and keep[right] and text[right].isspace():
        right += 1
    # the nearest kept characters beyond the white space, ignoring earlier holes
    before = next((text[k] for k in range(left - 1, -1, -1) if keep[k]), None)
    after = next((text[k] for k in range(right, len(text)) if keep[k]), None)

    def drop(a: int, b: int) -> None:
        for k in range(a, b):
            keep[k] = False

    if after is None:  # hole at the end: no trailing white space
        drop(left, hole_start)
    if before is None:  # hole at the start: no leading white space
        drop(hole_end, right)
    if before is None or after is None:
        return
    if after in CLOSING:
        drop(left, hole_start)
        return
    lws, rws = text[left:hole_start], text[hole_end:right]
    if lws and rws:
        if "\n" in rws and "\n" not in lws:
            drop(left, hole_start)
        else:
            drop(hole_end, right)
