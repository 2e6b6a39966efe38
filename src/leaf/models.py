"""Load Hugging Face causal LMs and their tokenizers, the one way every stage does.

``name_or_path`` is a local directory (``save_pretrained`` output) or a hub id;
nothing else is special-cased. ``dtype`` is ``float32``, ``bfloat16``,
``float16`` or ``auto``; ``device`` a torch device string; ``device_map`` (e.g.
``"auto"``) places a model too large for one device across several, through
accelerate, and then ``device`` is ignored.
"""

from __future__ import annotations

from typing import Any

DTYPES = ("float32", "bfloat16", "float16", "auto")


def torch_dtype(name: str) -> Any:
    import torch

    if name == "auto":
        return "auto"
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}") from None


def load_tokenizer(name_or_path: str) -> Any:
    """A fast tokenizer (leaf needs offset mappings) with a pad token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path)
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"{name_or_path}: no fast tokenizer available; leaf needs offset mappings")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    name_or_path: str,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    device_map: str | dict[str, Any] | None = None,
    attn_implementation: str | None = None,
    trainable: bool = False,
) -> Any:
    """A causal LM in eval mode; frozen (``requires_grad=False``) unless ``trainable``."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype)}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    if device_map is None:
        model.to(device)
    model.eval()
    if not trainable:
        model.requires_grad_(False)
    return model


def input_device(model: Any) -> Any:
    """Where input ids must go: the device of the input embedding (also under ``device_map``)."""
    return model.get_input_embeddings().weight.device
