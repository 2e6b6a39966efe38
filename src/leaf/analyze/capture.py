"""Reduce each layer's attention weights as they are computed (forward hooks).

``output_attentions=True`` keeps the weights of every layer until the forward
pass ends: ``L * H * T^2`` numbers (about 43 GB in bf16 for an 80-layer,
64-head model on 2048 tokens). With eager attention, each attention module of
a transformers 5 model returns ``(output, weights)``; a forward hook can reduce
``weights`` on the spot, so only one layer's weights live at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


def attention_modules(model: Any) -> list[Any]:
    """The self-attention modules of ``model`` in layer order (classes named ``*Attention`` with a ``layer_idx``)."""
    mods = [m for m in model.modules() if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")]
    return sorted(mods, key=lambda m: m.layer_idx)


@contextmanager
def attention_hooks(model: Any, reduce: Callable[[int, torch.Tensor], None]) -> Iterator[int]:
    """Call ``reduce(layer_index, weights [B, H, T, T])`` for every layer during forward passes.

    Yields the number of hooked layers. Raises ``RuntimeError`` when the model has
    no recognisable attention modules or a module returns no weights (load the
    model with ``attn_implementation="eager"``).
    """
    modules = attention_modules(model)
    if not modules:
        raise RuntimeError(
            f"{type(model).__name__}: no attention modules found to hook; use --collect output_attentions"
        )

    def hook(module: Any, _args: Any, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if not isinstance(weights, torch.Tensor) or weights.dim() != 4:
            raise RuntimeError(
                f"{type(module).__name__} returned no attention weights; "
                "load the model with attn_implementation='eager'"
            )
        reduce(int(module.layer_idx), weights)

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield len(modules)
    finally:
        for h in handles:
            h.remove()
