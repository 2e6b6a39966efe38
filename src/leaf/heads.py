"""A causal LM's output head, applied in bounded chunks: final hidden states in, a few logits at a time out.

Shared by detection (saliency, surprisal) and distillation (the KL), so that no
stage ever holds full-vocabulary logits for more than :func:`chunk_rows`
positions: the model runs up to its final hidden states
(:func:`capture_head_input`, :func:`final_hidden_states`), the hidden states
of the positions that matter are packed, and the head -- with any final logit
soft-capping or scaling, :class:`OutputHead` -- is applied a chunk at a time,
recomputed in the backward pass instead of kept (:func:`chunked_nll`).
:func:`checkpointed_layers` recomputes the decoder layers in backward too.
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
        if not bool(torch.isfinite(want).all()):
            from leaf.models import NonFiniteError

            name = getattr(model, "name_or_path", "") or type(model).__name__
            raise NonFiniteError(f"{name}: the model's logits are not finite on a two-token probe input; its forward "
                                 "pass overflows (check --dtype)")
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


def causal_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """The mask to give a causal LM: None when every row is right padded (its ones, then its zeros).

    Under causal attention a real token only attends to earlier positions, and with right padding those are
    all real: the padding mask changes nothing for them (their hidden states, losses and input gradients are
    the same; positions count from 0 either way). Without it, SDPA runs with ``is_causal=True`` and no
    ``(B, 1, T, T)`` mask, which lets it take its memory-efficient kernels on a padded batch. Any other
    layout (left padding, holes) keeps its mask.
    """
    mask = attention_mask.bool()
    if mask.dim() != 2 or bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        return attention_mask
    return None


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
