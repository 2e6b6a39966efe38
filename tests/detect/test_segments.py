"""Response segmentation at reasoning-step boundaries, balanced by length."""

from __future__ import annotations

import pytest

from leaf.detect.segments import segment_response


def _parts(text, k):
    return [text[s:e] for s, e in segment_response(text, k)]


def test_numbered_steps():
    text = "Step 1: read the numbers.\nStep 2: add them, 3 + 5 = 8.\nStep 3: check.\nThe answer is 8."
    assert _parts(text, 2) == ["Step 1: read the numbers.\nStep 2: add them, 3 + 5 = 8.\n",
                               "Step 3: check.\nThe answer is 8."]
    assert _parts(text, 3) == ["Step 1: read the numbers.\n", "Step 2: add them, 3 + 5 = 8.\n",
                               "Step 3: check.\nThe answer is 8."]


def test_blank_lines_win_over_line_breaks():
    text = "We look up key 9.\nIt is listed twice.\n\nKey 9 maps to 44.\nThe answer is 44."
    assert _parts(text, 2) == ["We look up key 9.\nIt is listed twice.\n\n", "Key 9 maps to 44.\nThe answer is 44."]


def test_neither_sentences():
    text = "Tom starts with 3 apples. He gets 5 more. So he has 8. The answer is 8."
    parts = _parts(text, 2)
    assert parts == ["Tom starts with 3 apples. He gets 5 more. ", "So he has 8. The answer is 8."]
    assert _parts(text, 3) == ["Tom starts with 3 apples. ", "He gets 5 more. ", "So he has 8. The answer is 8."]


def test_no_sentence_end_falls_back_to_white_space_and_covers_everything():
    text = "three plus five makes eight"
    segs = segment_response(text, 2)
    assert segs[0][0] == 0 and segs[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(segs, segs[1:]))
    assert _parts(text, 2) == ["three plus ", "five makes eight"]


def test_too_short_gives_fewer_segments():
    assert segment_response("eight", 2) == [(0, 5)]
    assert _parts("a b", 3) == ["a ", "b"]
    with pytest.raises(ValueError):
        segment_response("x", 0)
