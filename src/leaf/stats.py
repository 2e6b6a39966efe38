"""Paired comparisons of two arms on the same test problems (pure functions).

Within a seed every arm answers the *same* test problems, so two arms are
compared problem by problem: ``b`` problems only arm A solves, ``c`` only arm
B. McNemar's exact test asks whether ``b`` and ``c`` differ more than a fair
coin would make them (two-sided binomial test on ``b`` out of ``b + c``). One
test per seed, and one on the discordant counts summed over seeds (the seeds
are independent draws of pool, test set and training order, so their
discordant pairs add up). Beside the test, the per-seed differences of
accuracy give the mean and the spread a reader compares a gap with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` vs ``c`` discordant pairs (1.0 when there are none)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # P(X <= k) for X ~ Binomial(n, 1/2), doubled, capped at 1; summed in log space for large n
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(v - top) for v in logs)
    return min(1.0, 2.0 * tail)


def discordant(a: Mapping[str, bool], b: Mapping[str, bool]) -> tuple[int, int]:
    """``(only a right, only b right)`` over the problems both were scored on (the same ids are required)."""
    if set(a) != set(b):
        raise ValueError("the two arms were scored on different problems")
    only_a = sum(1 for k, v in a.items() if v and not b[k])
    only_b = sum(1 for k, v in a.items() if b[k] and not v)
    return only_a, only_b


def paired(per_seed_a: Sequence[Mapping[str, bool]], per_seed_b: Sequence[Mapping[str, bool]]) -> dict[str, Any]:
    """Arm A vs arm B over seeds: accuracy differences (points), per-seed and pooled McNemar tests."""
    seeds = []
    for a, b in zip(per_seed_a, per_seed_b, strict=True):
        only_a, only_b = discordant(a, b)
        n = len(a)
        seeds.append({"diff": 100.0 * (only_a - only_b) / n if n else 0.0, "only_a": only_a, "only_b": only_b,
                      "n": n, "p": mcnemar_exact(only_a, only_b)})
    diffs = [s["diff"] for s in seeds]
    mean = sum(diffs) / len(diffs)
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) if len(diffs) > 1 else 0.0
    only_a, only_b = sum(s["only_a"] for s in seeds), sum(s["only_b"] for s in seeds)
    return {"diff_mean": mean, "diff_std": std, "seeds": seeds, "pooled_p": mcnemar_exact(only_a, only_b),
            "only_a": only_a, "only_b": only_b, "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs)}
