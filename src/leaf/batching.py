"""Batches of token sequences: the one place that pads and that marks which tokens carry a loss.

* :data:`IGNORE_INDEX` -- the label of a token without loss (``-100``, the
  value transformers' and PyTorch's cross-entropy skip);
* :func:`pad` -- pad lists of ids (or labels) to one width, on the right (training,
  scoring) or on the left (generation), with the attention mask;
* :func:`loss_positions` -- which positions of a ``(B, L)`` label batch predict
  a loss token (position ``p`` predicts token ``p + 1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Label of a token that carries no loss.
IGNORE_INDEX = -100


def pad(sequences: Sequence[Sequence[int]], value: int, *, side: str = "right",
        multiple_of: int | None = None) -> tuple[Any, Any]:
    """``(ids, attention_mask)``, both ``(B, W)`` long tensors; ``W`` the longest length (rounded up to
    ``multiple_of``). ``side="left"`` right-aligns the sequences (what batched generation needs)."""
    import torch

    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    width = max(len(s) for s in sequences)
    if multiple_of:
        width = (width + multiple_of - 1) // multiple_of * multiple_of
    ids = torch.full((len(sequences), width), value, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        n = len(seq)
        cols = slice(width - n, width) if side == "left" else slice(0, n)
        ids[row, cols] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, cols] = 1
    return ids, mask


def loss_positions(labels: Any) -> Any:
    """``(B, L - 1)`` bool: position ``p`` predicts the loss token ``p + 1``."""
    return labels[:, 1:] != IGNORE_INDEX


__all__ = ["IGNORE_INDEX", "loss_positions", "pad"]
