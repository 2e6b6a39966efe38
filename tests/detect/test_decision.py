"""The decision rule on hand-made arrays."""

from __future__ import annotations

import pytest
import torch

from leaf.detect.decision import (
    confounder_scores,
    flag_percentile,
    flag_threshold,
    merge_spans,
    minmax,
    whitespace_mask,
)

T = lambda *xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731


def test_minmax_and_scores_by_hand():
    torch.testing.assert_close(minmax(T(2.0, 4.0, 3.0)), T(0.0, 1.0, 0.5))
    # gh_T = [0, 1, .5, 1], gh_S = [1, 0, .5, 0] -> diff [-1, 1, 0, 1] -> d = [0, 1, .5, 1]
    d = confounder_scores(T(1.0, 3.0, 2.0, 3.0), T(10.0, 0.0, 5.0, 0.0))
    torch.testing.assert_close(d, T(0.0, 1.0, 0.5, 1.0))


@pytest.mark.parametrize(
    "g_t,g_s",
    [
        (T(1.0), T(2.0)),  # one token
        (T(1.0, 1.0, 1.0), T(0.1, 0.5, 0.9)),  # teacher constant
        (T(0.1, 0.5, 0.9), T(0.0, 0.0, 0.0)),  # zero gradient
        (T(0.1, float("nan"), 0.9), T(0.1, 0.2, 0.3)),  # not finite
        (T(1.0, 2.0), T(1.0, 2.0)),  # d constant (identical profiles)
    ],
)
def test_degenerate_inputs_give_no_flags_and_no_nan(g_t, g_s):
    d = confounder_scores(g_t, g_s)
    assert d is None
    eligible = torch.ones(len(g_t), dtype=torch.bool)
    assert not flag_threshold(d, 0.5, eligible).any()
    assert not flag_percentile(d, 50, eligible).any()


def test_missing_teacher_scores_are_left_out_and_never_flagged():
    g_t, g_s = T(1.0, 3.0, 2.0, 3.0), T(10.0, 0.0, 5.0, 0.0)
    # no missing token: exactly the plain computation (the byte-identical path)
    torch.testing.assert_close(confounder_scores(g_t, g_s, torch.zeros(4, dtype=torch.bool)), confounder_scores(g_t, g_s))
    # a fifth token without a teacher score (NaN): the others are normalised as before, it gets NaN
    missing = torch.tensor([False, False, False, False, True])
    d = confounder_scores(torch.cat([g_t, T(float("nan"))]), torch.cat([g_s, T(99.0)]), missing)
    torch.testing.assert_close(d[:4], T(0.0, 1.0, 0.5, 1.0))
    assert torch.isnan(d[4])
    eligible = torch.ones(5, dtype=torch.bool)  # even if a caller forgets to mask it, it is never flagged
    assert flag_threshold(d, 1.0, eligible).tolist() == [True] * 4 + [False]
    assert flag_percentile(d, 100, eligible, cap=1.0).tolist() == [True] * 4 + [False]
    # before this rule a zero teacher score there read as "student-specific" and was flagged
    d_zero = confounder_scores(torch.cat([g_t, T(0.0)]), torch.cat([g_s, T(99.0)]))
    assert flag_threshold(d_zero, 0.1, eligible)[4]
    # fewer than two tokens with a teacher score: degenerate
    assert confounder_scores(T(1.0, float("nan")), T(1.0, 2.0), torch.tensor([False, True])) is None


def test_threshold_is_inclusive_and_respects_eligibility():
    d = T(0.0, 0.1, 0.10000001, 0.05, 1.0)
    eligible = torch.tensor([True, True, True, False, True])
    assert flag_threshold(d, 0.1, eligible).tolist() == [True, True, False, False, False]


def test_percentile_with_cap():
    d = T(*[i / 19 for i in range(20)])  # 0, 1/19, ..., 1
    eligible = torch.ones(20, dtype=torch.bool)
    # 10th percentile of 0..1 evenly spaced (linear) = 0.1 -> tokens 0/19 and 1/19 (0.0526)
    assert flag_percentile(d, 10, eligible).nonzero().squeeze(1).tolist() == [0, 1]
    # 80th percentile = 0.8 but capped at 0.5 -> tokens with d <= 0.5: 0..9
    assert flag_percentile(d, 80, eligible).sum().item() == 10
    # ineligible tokens are ignored when computing the percentile as well
    eligible[:10] = False
    got = flag_percentile(d, 10, eligible)  # eligible d: 10/19..1, 10th pct ~ 0.547 > cap 0.5
    assert not got.any()


def test_whitespace_tokens():
    assert whitespace_mask(["a", " ", "\n\n", "", " b"]).tolist() == [False, True, True, True, False]


def test_merge_spans_bridges_whitespace_and_trims():
    text = "Tom is 12 years old ,  now."
    #        0123456789012345678901234567
    offsets = [(0, 3), (3, 6), (6, 9), (9, 15), (15, 19), (19, 21), (21, 23), (23, 27)]
    # tokens: "Tom"," is"," 12"," years"," old"," ,","  ","now."
    flags = [False, False, True, True, False, True, False, False]
    assert merge_spans(offsets, flags, text) == [(7, 15), (20, 21)]
    # a whitespace-only token between two flagged ones joins them
    flags = [False, False, False, False, False, True, False, True]
    assert merge_spans(offsets, flags, text) == [(20, 27)]
    # ... but a flagged run followed only by whitespace ends before it
    flags = [False, False, False, False, False, True, False, False]
    assert merge_spans(offsets, flags, text) == [(20, 21)]
    assert merge_spans(offsets, [True] + [False] * 7, text) == [(0, 3)]
    assert merge_spans(offsets, [False] * 7 + [True], text) == [(23, 27)]
    assert merge_spans(offsets, [False] * 8, text) == []
