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
* logits are computed only for the positions that predict a target token
  (``logits_to_keep``), not for the whole prompt, and upcast to fp32 one chunk
  at a time.

Which tokens are scored and which tokens the loss covers are both free: the
caller reads the saliency of any positions it likes and passes any target mask
(instruction-level LeaF: loss on the response; response-level LeaF: loss on a
later response segment, scores read on instruction + earlier segments).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
import torch.nn.functional as F

#: Positions whose fp32 log-softmax is materialised at once.
LOSS_CHUNK = 1024


def _supports_logits_to_keep(model: Any) -> bool:
    return _forward_takes_logits_to_keep(type(model))


@functools.lru_cache(maxsize=None)
def _forward_takes_logits_to_keep(cls: type) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic wrappers
        return False


def _predicting_range(target_mask: torch.Tensor) -> tuple[int, int]:
    """``[lo, hi)`` of the positions whose logits predict a target (logits at p predict token p + 1)."""
    predicting = target_mask[:, 1:].any(0).nonzero().squeeze(1)
    return int(predicting.min()), int(predicting.max()) + 1


def _logits_between(model: Any, lo: int, hi: int, **inputs: Any) -> torch.Tensor:
    """Logits at positions ``[lo, hi)`` only, through ``logits_to_keep`` where the model has it."""
    if _supports_logits_to_keep(model):
        device = model.get_input_embeddings().weight.device
        return model(**inputs, use_cache=False, logits_to_keep=torch.arange(lo, hi, device=device)).logits
    return model(**inputs, use_cache=False).logits[:, lo:hi]


def embedding_saliency(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    target_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token saliency and per-sample loss for a right-padded batch.

    Args:
        model: a Hugging Face causal LM (frozen or not: only input gradients are taken).
        input_ids: ``[B, T]`` token ids, right padded.
        attention_mask: ``[B, T]`` 1 for real tokens, 0 for padding.
        target_mask: ``[B, T]`` bool, True where token ``t`` is a target whose NLL
            (given tokens ``< t``) enters the loss. Position 0 cannot be a target.

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
    n_targets = target_mask.sum(1)
    if (n_targets == 0).any():
        raise ValueError("every sample needs at least one target token")

    with torch.enable_grad():
        embeds = model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
        lo, hi = _predicting_range(target_mask)
        logits = _logits_between(model, lo, hi, inputs_embeds=embeds, attention_mask=attention_mask)
        targets = input_ids[:, lo + 1 : hi + 1]
        mask = target_mask[:, lo + 1 : hi + 1]
        nll_sum = torch.zeros(input_ids.shape[0], device=device, dtype=torch.float32)
        for s in range(0, hi - lo, LOSS_CHUNK):
            chunk = logits[:, s : s + LOSS_CHUNK].float()
            nll = F.cross_entropy(chunk.transpose(1, 2), targets[:, s : s + LOSS_CHUNK], reduction="none")
            nll_sum = nll_sum + (nll * mask[:, s : s + LOSS_CHUNK]).sum(1)
        loss = nll_sum / n_targets
        (grad,) = torch.autograd.grad(loss.sum(), embeds)
    saliency = grad.float().norm(dim=-1) * attention_mask
    return saliency.detach(), loss.detach().float()


def pad_batch(
    sequences: list[list[int]],
    targets: list[list[int]],
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad token lists; ``targets[b]`` are the target token indices of sample b.

    Returns ``(input_ids, attention_mask, target_mask)`` ready for :func:`embedding_saliency`.
    """
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(sequences), width), dtype=torch.long)
    tgt = torch.zeros((len(sequences), width), dtype=torch.bool)
    for b, (seq, tg) in enumerate(zip(sequences, targets)):
        ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        att[b, : len(seq)] = 1
        tgt[b, tg] = True
    return ids, att, tgt


@torch.no_grad()
def token_surprisal(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    positions: torch.Tensor) -> torch.Tensor:
    """``-log p(x_t | x_<t)`` in nats at the ``[B, T]`` bool ``positions`` (0 elsewhere and at t = 0)."""
    device = model.get_input_embeddings().weight.device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    positions = positions.to(device).bool().clone()
    positions[:, 0] = False
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=device)
    if not positions.any():
        return out.cpu()
    lo, hi = _predicting_range(positions)
    logits = _logits_between(model, lo, hi, input_ids=input_ids, attention_mask=attention_mask)
    for s in range(0, hi - lo, LOSS_CHUNK):
        chunk = logits[:, s : s + LOSS_CHUNK].float()
        nll = F.cross_entropy(chunk.transpose(1, 2), input_ids[:, lo + 1 + s : lo + 1 + s + chunk.shape[1]],
                              reduction="none")
        out[:, lo + 1 + s : lo + 1 + s + chunk.shape[1]] = nll
    return (out * positions).cpu()
