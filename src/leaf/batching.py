"""Batches of token sequences: the one place that pads and that marks which tokens carry a loss.

* :data:`IGNORE_INDEX` -- the label of a token without loss (``-100``, the
  value transformers' and PyTorch's cross-entropy skip);
* :func:`pad` -- pad lists of ids (or labels) to one width, on the right (training,
  scoring) or on the left (generation), with the attention mask;
* :func:`loss_positions` -- which positions of a ``(B, L)`` label batch predict
  a loss token (position ``p`` predicts token ``p + 1``);
* :func:`length_batches` -- group items of similar length into batches bounded in
  count and, optionally, in padded tokens (``--max-tokens-per-batch``);
* :func:`halving` -- run a batch, and on running out of memory halve it and
  retry down to one item, skipping (with its reason) an item that alone does
  not fit. Detection, teacher caching and generation all batch through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

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


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None, *,
                   longest_first: bool = False) -> list[list[int]]:
    """Indices grouped into batches of similar length: at most ``batch_size`` items, and, with ``max_tokens``,
    at most that many tokens once padded (items x the longest item). Items are sorted by length (ties: input
    order), so a batch pads little; an item longer than ``max_tokens`` is a batch of its own. The grouping
    depends only on the lengths, so a resumed run rebuilds the same batches."""
    if batch_size < 1 or (max_tokens is not None and max_tokens < 1):
        raise ValueError("batch_size and max_tokens must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i] if longest_first else lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    widest = 0
    for i in order:
        wider = max(widest, lengths[i])
        if current and (len(current) >= batch_size or (max_tokens is not None and wider * (len(current) + 1) > max_tokens)):
            batches.append(current)
            current, wider = [], lengths[i]
        current.append(i)
        widest = wider
    if current:
        batches.append(current)
    return batches


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA out-of-memory error, or the CPU allocator failing to allocate."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def halving(items: Sequence[T], run: Callable[[list[T]], list[R]],
            skip: Callable[[T, str], None]) -> list[R | None]:
    """``run(items)`` (one result per item); on running out of memory, halve the batch and retry.

    Down to a single item: an item that alone runs out of memory is passed to
    ``skip(item, reason)`` and its result is ``None``; the rest go on. Any other
    error propagates.
    """
    try:
        return list(run(list(items)))
    except (RuntimeError, MemoryError) as exc:
        if not (isinstance(exc, MemoryError) or is_out_of_memory(exc)):
            raise
        _free_cached_memory()
        if len(items) == 1:
            skip(items[0], f"out of memory even alone ({' '.join(str(exc).split())[:120]})")
            return [None]
        half = len(items) // 2
        return halving(items[:half], run, skip) + halving(items[half:], run, skip)


def _free_cached_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def loss_positions(labels: Any) -> Any:
    """``(B, L - 1)`` bool: position ``p`` predicts the loss token ``p + 1``."""
    return labels[:, 1:] != IGNORE_INDEX


__all__ = ["IGNORE_INDEX", "halving", "is_out_of_memory", "length_batches", "loss_positions", "pad"]
