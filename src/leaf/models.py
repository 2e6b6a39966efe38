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


class TokenizerOffsetsError(ConfigError):
    """The loaded tokenizer's offsets do not cover the text it encodes: spans would be wrong."""


#: Encoded once at load time; every character of it must lie in some token's offsets.
OFFSETS_PROBE = "Offsets probe: The quick brown fox jumps over 13 lazy dogs, (x + y) * 2 = 42."


def check_offsets(tok: Any, name_or_path: str) -> None:
    """Stop with :class:`TokenizerOffsetsError` when ``tok``'s offsets miss part of a known string.

    Transformers may load a tokenizer saved beside a model as its own class for
    that architecture (a custom tokenizer next to a qwen2 model becomes
    ``Qwen2Tokenizer``), whose offsets then cover little of the text: every
    sample would be skipped or scored on the wrong characters.
    """
    enc = tok(OFFSETS_PROBE, add_special_tokens=False, return_offsets_mapping=True)
    covered = [False] * len(OFFSETS_PROBE)
    for s, e in enc["offset_mapping"]:
        for i in range(max(s, 0), min(e, len(OFFSETS_PROBE))):
            covered[i] = True
    missed = [c for c, ok in zip(OFFSETS_PROBE, covered) if not ok and not c.isspace()]
    if missed:
        raise TokenizerOffsetsError(
            f"{name_or_path}: the tokenizer loaded as {type(tok).__name__} gives offsets that miss "
            f"{len(missed)} of {len(OFFSETS_PROBE)} characters of a probe string; leaf needs offsets that cover "
            "the text (transformers may have replaced a custom tokenizer with its own class for this architecture)"
        )


def load_tokenizer(name_or_path: str) -> Any:
    """A fast tokenizer (leaf needs offset mappings) with a pad token, whose offsets cover its input."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFolderError(name_or_path, "tokenizer", exc) from None
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"{name_or_path}: no fast tokenizer available; leaf needs offset mappings")
    check_offsets(tok, name_or_path)
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
