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
import functools
import inspect
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

#: At most this many positions' logits exist at once ...
LOSS_CHUNK = 1024
#: ... and at most this many logits (positions x vocabulary; 2**24 = 64 MiB in fp32).
LOSS_CHUNK_ELEMENTS = 2**24


def chunk_rows(vocab: int, chunk: int | None = None, max_elements: int | None = None) -> int:
    """Positions per output-head chunk: ``chunk`` (default :data:`LOSS_CHUNK`), capped by the element budget."""
    budget = LOSS_CHUNK_ELEMENTS if max_elements is None else max_elements
    cap = LOSS_CHUNK if chunk is None else chunk
    return max(1, min(cap, budget // max(int(vocab), 1)))


def _supports_logits_to_keep(model: Any) -> bool:
    return _forward_takes_logits_to_keep(type(model))


@functools.lru_cache(maxsize=None)
def _forward_takes_logits_to_keep(cls: type) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic wrappers
        return False


# ----------------------------------------------------------------------------
# The output head as a function of final hidden states.
# ----------------------------------------------------------------------------


class OutputHead:
    """``logits = transform(head(hidden))``: a causal LM's output head and its final logit transform.

    Known transforms, read from the (text) config: Gemma-2/3 ``final_logit_softcapping``
    (``c * tanh(z / c)``), Granite ``logits_scaling`` (``z / s``) and Cohere
    ``logit_scale`` (``z * s``). The first :func:`output_head` call on a model
    checks the composition against the model's own logits on a two-token input
    and raises ``NotImplementedError`` if they differ (an unknown transform).
    """

    def __init__(self, model: Any) -> None:
        module = model.get_output_embeddings()
        if module is None:
            raise NotImplementedError(f"{type(model).__name__} has no output embeddings (get_output_embeddings() is None)")
        self.module = module
        config = getattr(model, "config", None)
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.softcap = getattr(text, "final_logit_softcapping", None)
        self.divide = getattr(text, "logits_scaling", None) if type(model).__name__.startswith("Granite") else None
        self.multiply = getattr(model, "logit_scale", None) if type(model).__name__.startswith("Cohere") else None
        weight = getattr(module, "weight", None)
        self.vocab = int(getattr(module, "out_features", 0) or (weight.shape[0] if weight is not None else 0))

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.module(hidden)
        if self.multiply is not None:
            logits = logits * self.multiply
        if self.divide is not None:
            logits = logits / self.divide
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def output_head(model: Any) -> OutputHead:
    """The :class:`OutputHead` of ``model``, checked once per model against its own forward."""
    head = OutputHead(model)
    if _CHECKED.get(model) is not head.module:
        device = model.get_input_embeddings().weight.device
        ids = torch.tensor([[1, 2]], device=device)
        with torch.no_grad(), capture_head_input(head.module, passthrough=True) as store:
            want = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
        if "hidden" not in store:
            raise NotImplementedError(f"{type(model).__name__}'s forward does not call its output embeddings module")
        with torch.no_grad():
            got = head(store["hidden"])
        if got.shape != want.shape or not torch.allclose(got.float(), want.float(), rtol=1e-3, atol=1e-3 * float(want.abs().max()) + 1e-6):
            raise NotImplementedError(
                f"{type(model).__name__}: logits are not output_embeddings(hidden) with a known final transform "
                "(softcapping / logits_scaling / logit_scale); chunked loss computation would be wrong"
            )
        _CHECKED[model] = head.module
    return head


@contextlib.contextmanager
def capture_head_input(module: Any, passthrough: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """While active, ``module`` (the output head) records its input in ``store["hidden"]``.

    Unless ``passthrough``, it returns an empty ``(..., 0)`` slice of it instead of
    logits: the model's forward then computes no logits at all (a final transform
    on an empty tensor is a no-op).
    """
    store: dict[str, torch.Tensor] = {}
    own = module.__dict__.get("forward")  # e.g. accelerate's device-map hook
    inner = module.forward

    def forward(hidden: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        store["hidden"] = hidden
        return inner(hidden, *args, **kwargs) if passthrough else hidden[..., :0]

    module.forward = forward
    try:
        yield store
    finally:
        if own is None:
            del module.forward
        else:
            module.forward = own


def final_hidden_states(model: Any, keep: torch.Tensor, head: OutputHead | None = None, **inputs: Any) -> torch.Tensor:
    """``(N, H)`` final hidden states (the output head's input) at the True positions of ``keep`` ``[B, T]``.

    Rows are in row-major order of ``keep`` (as ``keep.nonzero()``). The model
    runs through its own ``forward`` (so wrappers and hooks stay in place) with
    ``logits_to_keep=keep`` where it takes one; no logits are computed.
    """
    module = (head or OutputHead(model)).module
    with capture_head_input(module) as store:
        if _supports_logits_to_keep(model):
            model(**inputs, use_cache=False, logits_to_keep=keep)
        else:
            model(**inputs, use_cache=False)
    if "hidden" not in store:
        raise NotImplementedError(f"{type(model).__name__}'s forward does not call its output embeddings module")
    hidden = store["hidden"]
    if hidden.dim() == 3:
        hidden = hidden[keep.to(hidden.device)]
    if hidden.shape[0] != int(keep.sum()):
        raise RuntimeError(f"expected {int(keep.sum())} hidden rows, got {tuple(hidden.shape)}")
    return hidden


def _nll_chunk(head: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="none")


def chunked_nll(head: OutputHead, hidden: torch.Tensor, targets: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """``(N,)`` fp32 ``-log softmax(head(hidden))[targets]``, :func:`chunk_rows` rows at a time.

    With gradients on, each chunk runs under ``torch.utils.checkpoint``: its
    logits are freed after the forward and recomputed in the backward pass.
    """
    step = chunk_rows(head.vocab, chunk)
    grad = torch.is_grad_enabled() and hidden.requires_grad
    parts = []
    for s in range(0, hidden.shape[0], step):
        h, y = hidden[s : s + step], targets[s : s + step]
        parts.append(checkpoint(_nll_chunk, head, h, y, use_reentrant=False) if grad else _nll_chunk(head, h, y))
    if not parts:
        return hidden.new_zeros(0, dtype=torch.float32)
    return torch.cat(parts)


# ----------------------------------------------------------------------------
# Decoder-layer checkpointing for the input-gradient pass.
# ----------------------------------------------------------------------------


def _checkpoint_call(forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


@contextlib.contextmanager
def checkpointed_layers(model: Any, enable: bool = True) -> Iterator[None]:
    """While active, every decoder layer of ``model`` runs under non-reentrant ``torch.utils.checkpoint``.

    Works in eval mode and with frozen parameters (the embeddings carry the
    gradient), unlike ``model.activation_checkpointing_enable()``, which only
    acts in training mode. The layers are transformers'
    ``GradientCheckpointingLayer`` modules; a model without any is refused.
    """
    if not enable:
        yield
        return
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise NotImplementedError(f"{type(model).__name__} has no checkpointable decoder layers")
    saved = [(m, m.__dict__.get("forward")) for m in layers]
    for m in layers:
        m.forward = functools.partial(_checkpoint_call, m.forward)
    try:
        yield
    finally:
        for m, own in saved:
            if own is None:
                del m.forward
            else:
                m.forward = own


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token saliency and per-sample loss for a right-padded batch.

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

    head = output_head(model)
    keep = _predicting(target_mask)
    b_idx, t_idx = keep.nonzero(as_tuple=True)  # row-major: the order of the packed hidden states
    targets = input_ids[b_idx, t_idx + 1]
    with torch.enable_grad(), checkpointed_layers(model, gradient_checkpointing):
        embeds = model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
        hidden = final_hidden_states(model, keep, head, inputs_embeds=embeds, attention_mask=attention_mask)
        nll = chunked_nll(head, hidden, targets.to(hidden.device), chunk_size).to(device)
        nll_sum = torch.zeros(input_ids.shape[0], device=device, dtype=torch.float32).index_add(0, b_idx, nll)
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
                    positions: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """``-log p(x_t | x_<t)`` in nats at the ``[B, T]`` bool ``positions`` (0 elsewhere and at t = 0).

    Logits exist for at most :func:`chunk_rows` positions at a time (see :func:`embedding_saliency`).
    """
    device = model.get_input_embeddings().weight.device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    positions = positions.to(device).bool().clone()
    positions[:, 0] = False
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=device)
    if not positions.any():
        return out.cpu()
    head = output_head(model)
    keep = _predicting(positions)
    b_idx, t_idx = keep.nonzero(as_tuple=True)
    hidden = final_hidden_states(model, keep, head, input_ids=input_ids, attention_mask=attention_mask)
    nll = chunked_nll(head, hidden, input_ids[b_idx, t_idx + 1].to(hidden.device), chunk_size)
    out[b_idx, t_idx + 1] = nll.to(device)
    return out.cpu()
