"""Which tokens are confounders: pure functions on one sample's saliency vectors.

Given teacher and student saliencies ``g_T``, ``g_S`` over the analysed tokens
(the paper's Stage 1, steps 3-5):

1. min-max normalise each: ``gh_T``, ``gh_S`` in [0, 1];
2. ``d = gh_T - gh_S``, min-max normalised again to [0, 1] (as the authors'
   code does): low ``d`` = the student is far more sensitive than the teacher;
3. flag ``d <= tau`` (:func:`flag_threshold`) or the lowest ``p`` % of ``d``
   with that threshold capped at 0.5 (:func:`flag_percentile`, the reference
   math script's rule);
4. never flag whitespace-only tokens;
5. merge consecutive flagged tokens into character spans (:func:`merge_spans`).

Degenerate inputs -- a single token, constant scores, an all-zero gradient,
non-finite values -- carry no contrast to compare, so they give *no* flags
(and ``None`` scores), never NaN.

Tokens whose teacher score is *missing* (no teacher token covers their
characters, see :mod:`leaf.detect.projection`) are left out of steps 1-3: the
normalisations run over the other tokens only, and a missing token gets a NaN
score and is never eligible for a flag. With no missing token the computation
is exactly the one above.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from leaf.data.spans import Span, tight

#: Relative range under which a score vector counts as constant.
_EPS = 1e-9

#: The paper's threshold for a 1B student at instruction level (smaller students need a higher tau).
DEFAULT_TAU = 0.10

#: The percentile rule never flags a token whose score exceeds this (the reference math script's cap).
PERCENTILE_CAP = 0.5


def minmax(x: torch.Tensor) -> torch.Tensor | None:
    """Min-max normalise a 1-D tensor to [0, 1]; ``None`` when it is constant or not finite."""
    x = x.double()
    if x.numel() < 2 or not torch.isfinite(x).all():
        return None
    lo, hi = x.min(), x.max()
    span = hi - lo
    if span <= _EPS * max(float(x.abs().max()), 1e-30) or span == 0:
        return None
    return (x - lo) / span


def confounder_scores(g_teacher: torch.Tensor, g_student: torch.Tensor,
                      missing: torch.Tensor | None = None) -> torch.Tensor | None:
    """``d = minmax(minmax(g_T) - minmax(g_S))`` over the analysed tokens, or ``None`` if degenerate.

    ``missing`` (bool, optional) marks tokens without a teacher score: they are
    left out of every normalisation and get ``NaN``; ``None`` if fewer than two
    tokens remain or the rest is degenerate.
    """
    if g_teacher.shape != g_student.shape:
        raise ValueError(f"saliency shapes differ: {tuple(g_teacher.shape)} vs {tuple(g_student.shape)}")
    if missing is not None and bool(missing.any()):
        present = ~missing
        d = confounder_scores(g_teacher[present], g_student[present])
        if d is None:
            return None
        out = torch.full(g_teacher.shape, float("nan"), dtype=d.dtype)
        out[present] = d
        return out
    gt, gs = minmax(g_teacher), minmax(g_student)
    if gt is None or gs is None:
        return None
    return minmax(gt - gs)


def scored(scores: torch.Tensor, eligible: torch.Tensor) -> torch.Tensor:
    """Eligible tokens that have a score (a missing teacher score gives NaN, never a flag)."""
    return eligible & ~torch.isnan(scores)


def flag_threshold(scores: torch.Tensor | None, tau: float, eligible: torch.Tensor) -> torch.Tensor:
    """Flag eligible tokens with ``score <= tau``."""
    if scores is None:
        return torch.zeros_like(eligible, dtype=torch.bool)
    return (scores <= tau) & scored(scores, eligible)


def flag_percentile(
    scores: torch.Tensor | None,
    percent: float,
    eligible: torch.Tensor,
    cap: float = PERCENTILE_CAP,
) -> torch.Tensor:
    """Flag eligible tokens in the lowest ``percent`` % of scores (threshold capped at ``cap``).

    The threshold is the ``percent``-th percentile (linear interpolation) of the
    eligible scores; the cap keeps a sample whose scores are all high from
    having its "least bad" tokens flagged anyway.
    """
    if scores is not None:
        eligible = scored(scores, eligible)
    if scores is None or not eligible.any():
        return torch.zeros_like(eligible, dtype=torch.bool)
    q = torch.quantile(scores[eligible].double(), percent / 100.0)
    return (scores <= min(float(q), cap)) & eligible


def whitespace_mask(texts: Sequence[str]) -> torch.Tensor:
    """True for tokens whose text is empty or whitespace only."""
    return torch.tensor([not t.strip() for t in texts], dtype=torch.bool)


def merge_spans(
    offsets: Sequence[Span],
    flags: Sequence[bool],
    text: str,
) -> list[Span]:
    """Merge runs of flagged tokens into tight ``[start, end)`` spans of ``text``.

    Tokens are consecutive when adjacent in the token list; a whitespace-only
    token between two flagged tokens joins them (it is never flagged itself, but
    it does not break a phrase). Each span is trimmed of surrounding whitespace.
    """
    spans: list[Span] = []
    run: list[int] = []  # indices of the current run
    pending_ws: list[int] = []
    for i, flag in enumerate(flags):
        s, e = offsets[i]
        if flag:
            run.extend(pending_ws)
            pending_ws = []
            run.append(i)
        elif run and not text[s:e].strip():
            pending_ws.append(i)
        else:
            if run:
                spans.append(tight(offsets[run[0]][0], offsets[run[-1]][1], text))
            run, pending_ws = [], []
    if run:
        spans.append(tight(offsets[run[0]][0], offsets[run[-1]][1], text))
    return [sp for sp in spans if sp[1] > sp[0]]
