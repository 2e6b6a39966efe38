"""Batches of token sequences: the one place that pads and that marks which tokens carry a loss.

* :data:`IGNORE_INDEX` -- the label of a token without loss (``-100``, the
  value transformers' and PyTorch's cross-entropy skip);
* :func:`pad` -- pad lists of ids (or labels) to one width, on the right (training,
  scoring) or on the left (generation), with the attention mask;
* :func:`pack` -- concatenate lists of ids into one row with no padding (packed
  sequences): position ids restart at each sample, so transformers confines
  attention to each sample (``attention_mask=None``; see :func:`pack`);
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


def pack(sequences: Sequence[Sequence[int]], labels: Sequence[Sequence[int]] | None = None, *,
         pad_value: int = 0, multiple_of: int | None = None) -> dict[str, Any]:
    """One ``(1, T)`` row holding every sequence end to end (packed sequences, no padding between them).

    Returns ``input_ids``, ``position_ids`` (0, 1, ... restarting at each sequence), ``segment`` (the sequence
    each token belongs to; ``-1`` for the padding that rounds ``T`` up to ``multiple_of``) and, with ``labels``,
    ``labels`` whose first token of every sequence is :data:`IGNORE_INDEX` (position ``p`` predicts ``p + 1``: the
    last token of one sequence must not predict the first of the next).

    Given ``position_ids`` and no attention mask, transformers (>= 5, ``masking_utils``) reads a new sequence
    wherever the position ids do not go up by one and masks attention to each sequence (SDPA / eager: a
    block-causal mask; flash-attention: variable-length kernels; flex attention: a block mask), so every token
    sees exactly what it sees in its own unpadded row. The padding tail gets positions restarting at 0: a
    sequence of its own, attending only to itself.
    """
    import torch

    lengths = [len(s) for s in sequences]
    total = sum(lengths)
    width = total if not multiple_of else (total + multiple_of - 1) // multiple_of * multiple_of
    ids = torch.full((1, width), pad_value, dtype=torch.long)
    positions = torch.zeros((1, width), dtype=torch.long)
    segment = torch.full((1, width), -1, dtype=torch.long)
    out_labels = torch.full((1, width), IGNORE_INDEX, dtype=torch.long) if labels is not None else None
    start = 0
    for i, (seq, n) in enumerate(zip(sequences, lengths)):
        ids[0, start:start + n] = torch.as_tensor(list(seq), dtype=torch.long)
        positions[0, start:start + n] = torch.arange(n)
        segment[0, start:start + n] = i
        if out_labels is not None:
            assert labels is not None
            if len(labels[i]) != n:
                raise ValueError(f"sequence {i}: {n} ids but {len(labels[i])} labels")
            out_labels[0, start + 1:start + n] = torch.as_tensor(list(labels[i][1:]), dtype=torch.long)
        start += n
    positions[0, total:] = torch.arange(width - total)
    out = {"input_ids": ids, "position_ids": positions, "segment": segment}
    if out_labels is not None:
        out["labels"] = out_labels
    return out


def model_inputs(batch: dict[str, Any], device: Any = None, prefix: str = "") -> dict[str, Any]:
    """A causal LM's keyword inputs from a collated batch: ``input_ids`` with the ``attention_mask``, or, for
    packed rows (:func:`pack`), with the ``position_ids`` and no mask. ``prefix``: another
    model's inputs in the same batch (``"teacher_"``); ``device``: moved there."""
    names = ("input_ids", "attention_mask", "position_ids")
    kwargs = {n: batch[prefix + n] for n in names if prefix + n in batch}
    if device is not None:
        kwargs = {n: v.to(device) for n, v in kwargs.items()}
    return kwargs


def per_item_counts(labels: Any, segment: Any = None, items: int | None = None) -> list[int]:
    """Loss tokens of each item of a collated batch, in order: per row of a padded ``(B, L)`` label batch, or
    per segment of packed rows (``items``: how many there are; default the highest segment + 1)."""
    import torch

    has = loss_positions(labels)
    if segment is None:
        return [int(n) for n in has.sum(1).tolist()]
    owner = segment[:, 1:].to(has.device)[has]  # never padding: its labels are ignored
    return torch.bincount(owner, minlength=items if items is not None else int(segment.max()) + 1).tolist()


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


__all__ = ["IGNORE_INDEX", "halving", "is_out_of_memory", "length_batches", "loss_positions", "model_inputs", "pack", "pad", "per_item_counts"]
