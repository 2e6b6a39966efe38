"""Gradient saliency of input tokens: g_i = || d loss / d e_i ||_2.

``loss`` is, per sample, the mean negative log-likelihood of the target tokens
(teacher forcing); ``e_i`` the input embedding of token ``i``. One forward and
one backward pass serve a whole batch: samples do not interact (right padding,
attention mask), so the gradient of the *sum* of per-sample losses with respect
to sample b's embeddings is the gradient of sample b's own loss.

Cost discipline (the reference implementation does none of this):

* model parameters stay frozen: the backward pass computes input gradients
  only, no weight gradient is ever allocated;
* eval mode (no dropout), so scores are deterministic;
* no full-vocabulary logits tensor ever exists. The model runs up to its final
  hidden states (the input of its output head, captured with
  :func:`final_hidden_states`); the hidden states of each sample's *own*
  predicting positions are packed into one ``(N, H)`` tensor; the output head
  (with any final logit soft-capping / scaling, :class:`OutputHead`) is
  applied :func:`chunk_rows` positions at a time, and each chunk's logits are
  recomputed in the backward pass instead of kept (:func:`chunked_nll`). At
  most ``chunk_rows(V)`` positions x vocabulary of logits exist at once,
  whatever the mix of sample lengths in the batch;
* optionally (``gradient_checkpointing=True``) the decoder layers' activations
  are recomputed in the backward pass too (:func:`checkpointed_layers`).

Which tokens are scored and which tokens the loss covers are both free: the
caller reads the saliency of any positions it likes and passes any target mask
(instruction-level LeaF: loss on the response; response-level LeaF: loss on a
later response segment, scores read on instruction + earlier segments).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from leaf.batching import pad
from leaf.heads import (
    causal_attention_mask,
    checkpointed_layers,
    chunked_nll,
    final_hidden_states,
    output_head,
)
from leaf.sharding import is_sharded

# ----------------------------------------------------------------------------
# Saliency and surprisal.
# ----------------------------------------------------------------------------


def _predicting(mask: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` bool: positions whose logits predict a True position of ``mask`` (p predicts p + 1)."""
    out = torch.zeros_like(mask)
    out[:, :-1] = mask[:, 1:]
    return out


def embedding_saliency(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    target_mask: torch.Tensor,
    gradient_checkpointing: bool = False,
    chunk_size: int | None = None,
    *,
    packed: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token saliency and per-sample loss for a right-padded batch, or for packed rows.

    Args:
        model: a Hugging Face causal LM (frozen or not: only input gradients are taken).
        input_ids: ``[B, T]`` token ids, right padded.
        attention_mask: ``[B, T]`` 1 for real tokens, 0 for padding.
        target_mask: ``[B, T]`` bool, True where token ``t`` is a target whose NLL
            (given tokens ``< t``) enters the loss. Position 0 cannot be a target.
        gradient_checkpointing: recompute the decoder layers' activations in the
            backward pass (less memory, about one more forward pass of time).
        chunk_size: positions per output-head chunk (default :data:`LOSS_CHUNK`,
            always capped by :data:`LOSS_CHUNK_ELEMENTS` logits).
        packed: the ``position_ids`` and ``segment`` of packed rows (:func:`leaf.batching.pack`): several
            samples per row, attention confined to each (no attention mask is given to the model); the
            losses are then per segment, ``[S]``, and ``attention_mask`` marks the real tokens.

    Returns:
        ``(saliency, loss)``: ``saliency`` ``[B, T]`` float32, the L2 norm of the
        gradient of sample b's mean target NLL w.r.t. the input embedding of each
        token (0 at padding); ``loss`` ``[B]`` float32, that mean NLL (nats).
    """
    if target_mask[:, 0].any():
        raise ValueError("position 0 cannot be a target (nothing precedes it)")
    device = model.get_input_embeddings().weight.device
    input_ids = input_ids.to(device)
    attention_mask = attention_mask.to(device)
    target_mask = target_mask.to(device).bool() & attention_mask.bool()
    head = output_head(model)
    keep = _predicting(target_mask)
    b_idx, t_idx = keep.nonzero(as_tuple=True)  # row-major: the order of the packed hidden states
    targets = input_ids[b_idx, t_idx + 1]
    if packed is None:
        owner, n_owners, extra = b_idx, input_ids.shape[0], {"attention_mask": causal_attention_mask(attention_mask)}
    else:
        if (target_mask & (packed["position_ids"].to(device) == 0)).any():
            raise ValueError("the first token of a packed sample cannot be a target (nothing precedes it)")
        segment = packed["segment"].to(device)
        owner, n_owners = segment[b_idx, t_idx + 1], int(segment.max()) + 1
        extra = {"position_ids": packed["position_ids"].to(device)}
    n_targets = torch.bincount(owner, minlength=n_owners)
    if (n_targets == 0).any():
        raise ValueError("every sample needs at least one target token")
    with torch.enable_grad(), checkpointed_layers(model, gradient_checkpointing):
        if is_sharded(model):  # the embedding's weight is gathered only inside the model's forward
            with embedding_leaf(model) as store:
                hidden = final_hidden_states(model, keep, head, input_ids=input_ids, **extra)
            embeds = store["embeds"]
        else:
            embeds = model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
            hidden = final_hidden_states(model, keep, head, inputs_embeds=embeds, **extra)
        nll = chunked_nll(head, hidden, targets.to(hidden.device), chunk_size).to(device)
        nll_sum = torch.zeros(n_owners, device=device, dtype=torch.float32).index_add(0, owner, nll)
        loss = nll_sum / n_targets
        (grad,) = torch.autograd.grad(loss.sum(), embeds)
    saliency = grad.float().norm(dim=-1) * attention_mask
    return saliency.detach(), loss.detach().float()


@contextlib.contextmanager
def embedding_leaf(model: Any) -> Iterator[dict[str, torch.Tensor]]:
    """While active, the input embedding's output becomes a leaf that requires grad, kept in ``store["embeds"]``.

    The same tensor as ``get_input_embeddings()(input_ids)`` given as ``inputs_embeds``, but made inside the
    model's own forward: under FSDP2 the embedding's weight is a shard outside it.
    """
    store: dict[str, torch.Tensor] = {}

    def hook(module: Any, args: Any, out: torch.Tensor) -> torch.Tensor:
        store["embeds"] = out.detach().requires_grad_(True)
        return store["embeds"]

    handle = model.get_input_embeddings().register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()
    if "embeds" not in store:
        raise NotImplementedError(f"{type(model).__name__}'s forward does not call its input embeddings module")


def pack_batch(sequences: list[list[int]], targets: list[list[int]], pad_id: int,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor], list[int]]:
    """:func:`pad_batch` for one packed row (:func:`leaf.batching.pack`): ``(input_ids, attention_mask,
    target_mask, packed, starts)``, ``packed`` the position ids and segments for :func:`embedding_saliency`'s
    ``packed=``, ``starts`` the column where each sequence begins."""
    from leaf.batching import pack

    row = pack(sequences, pad_value=pad_id)
    starts, at = [], 0
    for seq in sequences:
        starts.append(at)
        at += len(seq)
    tgt = torch.zeros(row["input_ids"].shape, dtype=torch.bool)
    for start, tg in zip(starts, targets):
        tgt[0, [start + t for t in tg]] = True
    att = (row["segment"] >= 0).long()
    return row["input_ids"], att, tgt, {"position_ids": row["position_ids"], "segment": row["segment"]}, starts


def pad_batch(
    sequences: list[list[int]],
    targets: list[list[int]],
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad token lists; ``targets[b]`` are the target token indices of sample b.

    Returns ``(input_ids, attention_mask, target_mask)`` ready for :func:`embedding_saliency`.
    """
    ids, att = pad(sequences, pad_id)
    tgt = torch.zeros(ids.shape, dtype=torch.bool)
    for b, tg in enumerate(targets):
        tgt[b, tg] = True
    return ids, att, tgt


@torch.no_grad()
def token_surprisal(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    positions: torch.Tensor, chunk_size: int | None = None, *,
                    packed: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """``-log p(x_t | x_<t)`` in nats at the ``[B, T]`` bool ``positions`` (0 elsewhere and at t = 0; with
    ``packed`` rows, see :func:`embedding_saliency`, at each sample's first token).

    Logits exist for at most :func:`chunk_rows` positions at a time (see :func:`embedding_saliency`).
    """
    device = model.get_input_embeddings().weight.device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    positions = positions.to(device).bool().clone()
    positions[:, 0] = False
    if packed is not None:
        positions &= packed["position_ids"].to(device) != 0
        extra = {"position_ids": packed["position_ids"].to(device)}
    else:
        extra = {"attention_mask": causal_attention_mask(attention_mask)}
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=device)
    if not positions.any():
        return out.cpu()
    head = output_head(model)
    keep = _predicting(positions)
    b_idx, t_idx = keep.nonzero(as_tuple=True)
    hidden = final_hidden_states(model, keep, head, input_ids=input_ids, **extra)
    nll = chunked_nll(head, hidden, input_ids[b_idx, t_idx + 1].to(hidden.device), chunk_size)
    out[b_idx, t_idx + 1] = nll.to(device)
    return out.cpu()
