"""Project per-token scores from one tokenization onto another through characters.

Teacher and student may tokenize the instruction differently. Each model is
scored on its own tokens; the teacher's scores are then carried onto the
student's tokens by character overlap. For a student token covering characters
``[s, e)`` and the teacher tokens ``j`` overlapping it by ``o_j`` characters:

* ``rule="mean"`` (default): the overlap-weighted mean ``sum_j o_j g_j / sum_j o_j``
  -- a student token spanning two teacher tokens gets a blend of both;
* ``rule="max"``: the largest ``g_j`` among overlapping teacher tokens -- the
  teacher's strongest reliance anywhere in that stretch of text.

A student token that no teacher token overlaps -- possible only where one
tokenizer leaves characters uncovered that the other covers, e.g. a combining
accent that Qwen's NFC normaliser folds into the previous letter -- gets
``NaN``: the teacher has no score there (*missing*, not zero: a zero would read
as "the teacher ignores this token" and make it look student-specific). The
decision rule (:func:`leaf.detect.decision.confounder_scores`) leaves missing
tokens out and never flags them. When both
tokenizations have identical offsets the projection is the identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

RULES = ("mean", "max")


def project_scores(
    src_offsets: Sequence[tuple[int, int]],
    src_scores: torch.Tensor,
    dst_offsets: Sequence[tuple[int, int]],
    rule: str = "mean",
) -> torch.Tensor:
    """Scores of ``src`` tokens carried onto ``dst`` tokens (offsets in the same text)."""
    if rule not in RULES:
        raise ValueError(f"unknown projection rule {rule!r}; use one of {RULES}")
    if list(src_offsets) == list(dst_offsets):
        return src_scores.clone()
    out = torch.full((len(dst_offsets),), float("nan"), dtype=src_scores.dtype)
    j0 = 0
    for i, (s, e) in enumerate(dst_offsets):
        # offsets are sorted by start: skip src tokens that end before this one starts
        while j0 < len(src_offsets) and src_offsets[j0][1] <= s:
            j0 += 1
        weights, values = [], []
        j = j0
        while j < len(src_offsets) and src_offsets[j][0] < e:
            overlap = min(e, src_offsets[j][1]) - max(s, src_offsets[j][0])
            if overlap > 0:
                weights.append(overlap)
                values.append(src_scores[j])
            j += 1
        if not values:
            continue  # no teacher token here: missing (NaN)
        vals = torch.stack(values)
        if rule == "max":
            out[i] = vals.max()
        else:
            w = torch.tensor(weights, dtype=src_scores.dtype)
            out[i] = (w * vals).sum() / w.sum()
    return out

