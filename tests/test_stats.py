"""Paired tests of arms (the demo, `leaf evaluate --arm`): McNemar's exact p-values against values computed another way."""

from __future__ import annotations

import math
import random

import pytest

from leaf.stats import discordant, mcnemar_exact, paired


def _binom_two_sided(b: int, c: int) -> float:
    """Independent reference: enumerate every outcome as likely as or less likely than the observed one."""
    n = b + c
    probs = [math.comb(n, i) / 2**n for i in range(n + 1)]
    observed = probs[b]
    return min(1.0, sum(p for p in probs if p <= observed * (1 + 1e-12)))


@pytest.mark.parametrize("b,c", [(0, 0), (0, 1), (3, 3), (10, 2), (2, 10), (0, 9), (40, 61), (120, 80)])
def test_mcnemar_exact_matches_the_enumerated_binomial(b, c):
    expected = 1.0 if b + c == 0 else _binom_two_sided(b, c)
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)


def test_known_values():
    # 0 vs 6 discordant: 2 * 0.5**6 = 0.03125; 1 vs 9: 2 * (1 + 10) / 1024
    assert mcnemar_exact(0, 6) == pytest.approx(0.03125)
    assert mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    assert mcnemar_exact(1000, 1000) == pytest.approx(1.0)  # large n stays finite (log space)
    assert 0 < mcnemar_exact(600, 400) < 1e-9


def test_paired_counts_differences_and_pools_seeds():
    rng = random.Random(0)
    ids = [str(i) for i in range(200)]
    a_runs, b_runs = [], []
    for _ in range(3):
        a = {k: rng.random() < 0.6 for k in ids}
        b = {k: rng.random() < 0.4 for k in ids}
        a_runs.append(a)
        b_runs.append(b)
    result = paired(a_runs, b_runs)
    for seed, a, b in zip(result["seeds"], a_runs, b_runs):
        acc_diff = 100 * (sum(a.values()) - sum(b.values())) / len(ids)
        assert seed["diff"] == pytest.approx(acc_diff)
        assert (seed["only_a"], seed["only_b"]) == discordant(a, b)
    diffs = [s["diff"] for s in result["seeds"]]
    assert result["diff_mean"] == pytest.approx(sum(diffs) / 3)
    assert result["diff_std"] == pytest.approx(math.sqrt(sum((d - sum(diffs) / 3) ** 2 for d in diffs) / 2))
    pooled = mcnemar_exact(sum(s["only_a"] for s in result["seeds"]), sum(s["only_b"] for s in result["seeds"]))
    assert result["pooled_p"] == pooled and result["wins"] == 3 and result["pooled_p"] < 1e-6


def test_different_problems_are_refused():
    with pytest.raises(ValueError, match="different problems"):
        discordant({"1": True}, {"2": True})
