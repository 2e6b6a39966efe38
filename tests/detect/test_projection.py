"""Cross-tokenizer projection on a hand-made case."""

from __future__ import annotations

import pytest
import torch

from leaf.detect.projection import project_scores

# text "abcdefghij": teacher tokens abc|def|ghij, student tokens ab|cdef|gh|ij
SRC = [(0, 3), (3, 6), (6, 10)]
DST = [(0, 2), (2, 6), (6, 8), (8, 10)]
G = torch.tensor([1.0, 2.0, 3.0])


def test_overlap_weighted_mean():
    # "cdef" overlaps "abc" by 1 char (c) and "def" by 3 -> (1*1 + 3*2) / 4 = 1.75
    assert project_scores(SRC, G, DST, "mean").tolist() == [1.0, 1.75, 3.0, 3.0]


def test_max_rule():
    assert project_scores(SRC, G, DST, "max").tolist() == [1.0, 2.0, 3.0, 3.0]


def test_identity_and_uncovered_tokens():
    assert project_scores(SRC, G, SRC).tolist() == G.tolist()
    # a destination token no source token overlaps is missing (NaN), not 0
    out = project_scores([(0, 3)], torch.tensor([5.0]), [(0, 3), (3, 5)])
    assert out[0] == 5.0 and torch.isnan(out[1])
    for rule in ("mean", "max"):  # a gap inside the text (an NFC-folded combining mark) is missing too
        out = project_scores([(0, 3), (4, 6)], torch.tensor([1.0, 2.0]), [(0, 3), (3, 4), (4, 6)], rule)
        assert out[0] == 1.0 and torch.isnan(out[1]) and out[2] == 2.0


def test_unknown_rule():
    with pytest.raises(ValueError, match="projection rule"):
        project_scores(SRC, G, DST, "median")
