"""Detection methods behind one interface: gradient (LeaF) and the paper's ablation baselines.

Every method sees the same per-sample context and returns one flag per scored
token. The baselines flag exactly as many tokens as the gradient rule does on
that sample, so the ablation compares *which* tokens are pruned, not how many:

* ``gradient`` -- LeaF: the teacher/student saliency-difference rule;
* ``random`` -- that many eligible (non-whitespace) tokens drawn uniformly,
  seeded by ``(seed, sample key)``, so reruns and resumes draw the same tokens;
* ``ppl`` -- that many eligible tokens with the highest student surprisal
  ``-log p_S(x_i | x_<i)`` (ties: earlier token first).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MethodContext:
    key: str  #: the output key of the sample (seeds the random method)
    gradient_flags: torch.Tensor  #: [N] bool, the gradient rule's flags
    eligible: torch.Tensor  #: [N] bool, tokens that may be flagged (not whitespace)
    surprisal: torch.Tensor | None  #: [N] student surprisal (nats), for ppl
    seed: int = 0


def _gradient(ctx: MethodContext) -> torch.Tensor:
    return ctx.gradient_flags.clone()


def _random(ctx: MethodContext) -> torch.Tensor:
    n = int(ctx.gradient_flags.sum())
    pool = ctx.eligible.nonzero().squeeze(1).tolist()
    picked = random.Random(f"{ctx.seed}:{ctx.key}").sample(pool, n)
    flags = torch.zeros_like(ctx.eligible)
    flags[picked] = True
    return flags


def _ppl(ctx: MethodContext) -> torch.Tensor:
    if ctx.surprisal is None:
        raise ValueError("the ppl method needs student surprisal")
    n = int(ctx.gradient_flags.sum())
    s = ctx.surprisal.double().masked_fill(~ctx.eligible, float("-inf"))
    order = sorted(range(len(s)), key=lambda i: (-float(s[i]), i))[:n]
    flags = torch.zeros_like(ctx.eligible)
    flags[order] = True
    return flags


METHODS: dict[str, Callable[[MethodContext], torch.Tensor]] = {
    "gradient": _gradient,
    "random": _random,
    "ppl": _ppl,
}

#: Methods that need the student's per-token surprisal.
NEEDS_SURPRISAL = frozenset({"ppl"})


def apply_method(name: str, ctx: MethodContext) -> torch.Tensor:
    try:
        fn = METHODS[name]
    except KeyError:
        raise ValueError(f"unknown detection method {name!r}; use one of {sorted(METHODS)}") from None
    return fn(ctx)
