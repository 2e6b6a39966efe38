"""Exact pruned text, including punctuation, white space, unicode and both ends; property tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leaf.prune.text import prune_text


@pytest.mark.parametrize(
    "text,spans,expected",
    [
        ("Tom, who is 12, has 3 apples.", [(12, 14)], "Tom, who is, has 3 apples."),
        ("Tom has 3 apples.", [(8, 9)], "Tom has apples."),
        ("12 apples are red.", [(0, 2)], "apples are red."),
        ("The answer is 12", [(14, 16)], "The answer is"),
        ("The answer is 12.", [(14, 16)], "The answer is."),
        ("Price: 5 dollars (approx).", [(7, 8)], "Price: dollars (approx)."),
        ("a (12) b", [(3, 5)], "a () b"),
        ("line one 99\nline two", [(9, 11)], "line one\nline two"),
        ("first\n\n42 second", [(7, 9)], "first\n\nsecond"),
        ("Über 数学 café 🍎!", [(5, 7)], "Über café 🍎!"),
        ("Über 数学 café 🍎!", [(13, 14)], "Über 数学 café!"),
        ("a 1 2 b", [(2, 3), (4, 5)], "a b"),
        ("x 1 y 2 z", [(2, 3), (6, 7)], "x y z"),
        ("hint: 42; answer", [(6, 8)], "hint:; answer"),
        ("Tom has 3 apples.", [], "Tom has 3 apples."),
        ("  spaced  out  ", [(2, 8)], "  out  "),  # the field's own edge white space stays
    ],
)
def test_exact_pruned_text(text, spans, expected):
    assert prune_text(text, spans)[0] == expected


def test_removed_ranges_explain_the_edit():
    text = "Tom, who is 12, has 3 apples."
    new, removed = prune_text(text, [(12, 14), (20, 21)])
    assert new == "Tom, who is, has apples."
    assert removed == [(11, 14), (20, 22)]
    kept = "".join(c for i, c in enumerate(text) if not any(s <= i < e for s, e in removed))
    assert kept == new


def test_whole_text_and_overlapping_spans():
    assert prune_text("abc", [(0, 3)]) == ("", [(0, 3)])
    assert prune_text("one two three", [(4, 6), (5, 7)])[0] == "one three"


_texts = st.text(alphabet=st.sampled_from(list("ab c,.\n!é数🍎 ")), max_size=40)


@st.composite
def text_and_spans(draw):
    text = draw(_texts)
    n = len(text)
    spans = draw(st.lists(st.tuples(st.integers(0, n), st.integers(0, n)).map(sorted).map(tuple), max_size=4))
    return text, spans


@settings(max_examples=300, deadline=None)
@given(text_and_spans())
def test_never_removes_visible_text_outside_a_span(case):
    text, spans = case
    new, removed = prune_text(text, spans)
    in_span = [any(s <= i < e for s, e in spans) for i in range(len(text))]
    gone = [any(s <= i < e for s, e in removed) for i in range(len(text))]
    # what remains is the text minus the removed ranges, in order
    assert new == "".join(c for c, g in zip(text, gone) if not g)
    for i, c in enumerate(text):
        if in_span[i]:
            assert gone[i]  # every flagged character goes
        elif gone[i]:
            assert c.isspace()  # anything else that goes is white space ...
            # ... next to a cut: only white space lies between it and a flagged character
            left = next((j for j in range(i, -1, -1) if in_span[j] or not text[j].isspace()), None)
            right = next((j for j in range(i, len(text)) if in_span[j] or not text[j].isspace()), None)
            assert (left is not None and in_span[left]) or (right is not None and in_span[right])


@settings(max_examples=200, deadline=None)
@given(_texts)
def test_no_spans_is_the_identity(text):
    assert prune_text(text, []) == (text, [])
    assert prune_text(text, [(3, 3)])[0] == text
