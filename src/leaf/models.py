"""Load Hugging Face causal LMs and their tokenizers, the one way every stage does.

``name_or_path`` is a local directory (``save_pretrained`` output) or a hub id;
nothing else is special-cased. ``dtype`` is ``float32``, ``bfloat16``,
``float16`` or ``auto`` (bfloat16 on a CUDA device that has it, else
float32); ``device`` a torch device string or ``auto`` (``cuda`` when present,
else ``cpu``); ``device_map`` (e.g. ``"auto"``) places a model too large for
one device across several, through accelerate, and then ``device`` is ignored.
Every command shares these meanings, so ``--device`` and ``--dtype`` read the
same everywhere.
"""

from __future__ import annotations

from typing import Any

from leaf.config import ConfigError

DTYPES = ("float32", "bfloat16", "float16", "auto")


class ModelFolderError(ConfigError):
    """A model or tokenizer could not be loaded from what the user named: one line, naming it."""

    def __init__(self, name: str, what: str, exc: Exception) -> None:
        first = " ".join(str(exc).strip().split("\n", 1)[0].split()) or type(exc).__name__
        super().__init__(f"{name}: cannot load the {what} ({first})")


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``; any other name unchanged."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(name: str, device: str = "auto") -> str:
    """``auto`` -> ``bfloat16`` on a CUDA device that supports it, else ``float32``."""
    if name != "auto":
        return name
    import torch

    on_cuda = resolve_device(device).startswith("cuda") and torch.cuda.is_available()
    return "bfloat16" if on_cuda and torch.cuda.is_bf16_supported() else "float32"


def torch_dtype(name: str, device: str = "auto") -> Any:
    import torch

    name = resolve_dtype(name, device)
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}") from None


def load_tokenizer(name_or_path: str) -> Any:
    """A fast tokenizer (leaf needs offset mappings) with a pad token."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFolderError(name_or_path, "tokenizer", exc) from None
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"{name_or_path}: no fast tokenizer available; leaf needs offset mappings")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    name_or_path: str,
    *,
    dtype: str = "auto",
    device: str = "auto",
    device_map: str | dict[str, Any] | None = None,
    attn_implementation: str | None = None,
    trainable: bool = False,
) -> Any:
    """A causal LM in eval mode; frozen (``requires_grad=False``) unless ``trainable``."""
    from transformers import AutoModelForCausalLM

    device = resolve_device(device)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype, device)}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFolderError(name_or_path, "model", exc) from None
    if device_map is None:
        model.to(device)
    model.eval()
    if not trainable:
        model.requires_grad_(False)
    return model


def input_device(model: Any) -> Any:
    """Where input ids must go: the device of the input embedding (also under ``device_map``)."""
    return model.get_input_embeddings().weight.device
