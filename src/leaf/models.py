"""Load Hugging Face causal LMs and their tokenizers, the one way every stage does.

``name_or_path`` is a local directory (``save_pretrained`` output) or a hub id;
nothing else is special-cased. ``dtype`` is ``float32``, ``bfloat16``,
``float16`` or ``auto`` (bfloat16 on a CUDA device that has it, else
float32); ``device`` a torch device string or ``auto`` (``cuda`` when present,
else ``cpu``); ``device_map`` (e.g. ``"auto"``) places a model too large for
one device across several, through accelerate, and then ``device`` is ignored;
``max_memory`` caps what that placement may use per device (see
:func:`parse_max_memory` for the ``"0=70GiB,1=70GiB,cpu=100GiB"`` format) and
implies ``device_map="auto"`` when no map is given.
Every command shares these meanings, so ``--device`` and ``--dtype`` read the
same everywhere.

Before loading, :func:`load_model` estimates the weights' memory from the
model's config (parameters counted on the meta device, times the dtype's bytes)
and refuses, in one line (:class:`ModelTooLarge`), a model that cannot fit in
what its placement has: the free memory of the GPU, the sum of ``max_memory``,
or host RAM for ``cpu``.
"""

from __future__ import annotations

import re
from typing import Any

from leaf.config import ConfigError

DTYPES = ("float32", "bfloat16", "float16", "auto")
GIB = 2**30
#: Units of a --max-memory size, as accelerate reads them (GB = 10^9 bytes, GiB = 2^30).
SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
              "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
#: What a --max-memory key may name: a GPU index (or cuda:N), cpu, mps, disk (accelerate's keys).
MEMORY_KEYS = ("cpu", "mps", "disk")


class ModelFolderError(ConfigError):
    """A model or tokenizer could not be loaded from what the user named: one line, naming it."""

    def __init__(self, name: str, what: str, exc: Exception) -> None:
        first = " ".join(str(exc).strip().split("\n", 1)[0].split()) or type(exc).__name__
        super().__init__(f"{name}: cannot load the {what} ({first})")


class NonFiniteError(ConfigError):
    """A model holds or produces NaN / infinite numbers: one line naming the model and where it was seen."""


def first_non_finite(model: Any) -> str | None:
    """Name of the first parameter holding a NaN or an infinity, or ``None``.

    One parameter at a time, by its max and min (both propagate NaN; an infinity is one of them): two
    reductions and no temporary the size of the tensor, 20x faster than ``isfinite(p).all()`` on CPU
    (0.1 s vs 2.2 s for a 262,144 x 640 float32 embedding, one thread). Parameters on the meta device
    (not yet materialised, e.g. ZeRO-3 partitions) are skipped.
    """
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.is_meta or param.numel() == 0 or not param.is_floating_point():
                continue
            ends = torch.stack([param.amax(), param.amin()]).float()
            if not bool(torch.isfinite(ends).all()):
                return name
    return None


def check_finite_weights(model: Any, name: str, what: str = "model") -> None:
    """Refuse a model whose weights hold NaN or infinite values (they would train, score or rank as garbage)."""
    bad = first_non_finite(model)
    if bad is not None:
        raise NonFiniteError(f"{name}: the {what}'s weights hold NaN or infinite values (first in {bad})")


def embedding_rows(model: Any) -> int | None:
    """Rows of the model's input embedding (the ids it can read), from the weight or, if sharded away, the config."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(emb, "weight", None)
    if weight is not None and weight.dim() == 2 and weight.shape[0] > 0 and not weight.is_meta:
        return int(weight.shape[0])
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    size = getattr(text, "vocab_size", None)
    return int(size) if size else None


def check_vocabulary(model: Any, tokenizer: Any, name: str, what: str = "model") -> None:
    """Refuse a tokenizer that can produce ids the model has no embedding row for.

    A model with *more* rows than its tokenizer has tokens is normal (vocabularies padded to a multiple
    of 64 or 128) and accepted.
    """
    rows = embedding_rows(model)
    n = len(tokenizer)
    if rows is not None and n > rows:
        raise ConfigError(
            f"{name}: the tokenizer has {n} tokens but the {what}'s embedding only {rows} rows (ids {rows}..{n - 1} "
            "have no row); the tokenizer does not belong to these weights"
        )


class ModelTooLarge(ConfigError):
    """A model's weights cannot fit where they would be placed: one line naming the memory needed and available."""


def parse_size(text: str) -> int:
    """``"70GiB"`` -> bytes; units B, KB, MB, GB, TB (powers of 10) and KiB, MiB, GiB, TiB (powers of 2)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = (m.group(2) or "B").upper() if m else ""
    if not m or unit not in SIZE_UNITS:
        raise ConfigError(f"memory size {text!r}: use a number and a unit, e.g. 70GiB or 80GB")
    return int(float(m.group(1)) * SIZE_UNITS[unit])


def parse_max_memory(spec: str | dict[Any, Any] | None) -> dict[int | str, int] | None:
    """``"0=70GiB,1=70GiB,cpu=100GiB"`` -> ``{0: 75161927680, 1: 75161927680, "cpu": 107374182400}``.

    The dict accelerate's ``max_memory`` takes: comma-separated ``device=size`` pairs, a device
    being a GPU index (``0`` or ``cuda:0``), ``cpu``, ``mps`` or ``disk``; sizes as
    :func:`parse_size` reads them. A dict is checked and converted the same way; ``None`` and
    an empty string give ``None``.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return None
    pairs: list[tuple[Any, Any]]
    if isinstance(spec, dict):
        pairs = list(spec.items())
    else:
        pairs = []
        for part in spec.split(","):
            key, eq, size = part.partition("=")
            if not eq or not key.strip() or not size.strip():
                raise ConfigError(f"max_memory {spec!r}: {part.strip()!r} is not device=size (e.g. 0=70GiB,cpu=100GiB)")
            pairs.append((key.strip(), size.strip()))
    out: dict[int | str, int] = {}
    for key, size in pairs:
        name = str(key).lower()
        dev: int | str
        if isinstance(key, int) or name.isdigit():
            dev = int(key)
        elif name.startswith("cuda:") and name[5:].isdigit():
            dev = int(name[5:])
        elif name in MEMORY_KEYS:
            dev = name
        else:
            raise ConfigError(f"max_memory: unknown device {key!r}; use a GPU index (0, cuda:1), cpu, mps or disk")
        if dev in out:
            raise ConfigError(f"max_memory: device {key!r} given twice")
        out[dev] = size if isinstance(size, int) and not isinstance(size, bool) else parse_size(str(size))
    return out


def check_max_memory(spec: str | dict[Any, Any]) -> None:
    """Raise ``ValueError`` (naming ``spec``) unless :func:`parse_max_memory` reads it: an option's check."""
    try:
        parse_max_memory(spec)
    except ConfigError as exc:
        detail = str(exc).removeprefix(f"max_memory {spec!r}: ").removeprefix("max_memory: ")
        raise ValueError(f"{spec!r}: {detail}") from None


#: Device kinds a ``--device`` option may name (besides ``auto``).
DEVICE_KINDS = ("cpu", "cuda", "mps")


def check_device(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is ``auto`` or a device this machine has: an option's check.

    Read as :class:`torch.device` reads it; ``meta`` (no data) and a GPU this machine lacks are refused.
    """
    if name == "auto":
        return
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"{name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type not in DEVICE_KINDS:
        raise ValueError(f"{name!r}: leaf runs on auto, cpu, cuda, cuda:N or mps, not {dev.type}")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{name!r}: this machine has no CUDA GPU (or torch was built without CUDA)")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"{name!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name!r}: MPS is not available on this machine")


def free_memory(device: str) -> int | None:
    """Bytes free on ``device`` now: a CUDA GPU's free memory, host RAM available for ``cpu``; ``None`` if unknown."""
    if device == "cpu":
        try:
            import psutil

            return int(psutil.virtual_memory().available)
        except ImportError:
            try:
                with open("/proc/meminfo") as f:
                    info = dict(line.split(":", 1) for line in f)
                return int(info["MemAvailable"].split()[0]) * 1024
            except (OSError, KeyError, ValueError):
                return None
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
        return int(torch.cuda.mem_get_info(index)[0])
    return None


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def weight_bytes(name_or_path: str, dtype: str = "auto", device: str = "auto") -> tuple[int, str] | None:
    """(bytes, dtype name) of a model's weights in ``dtype``, from its config alone (no weights read).

    Parameters are counted on the meta device (``from_config`` under accelerate's
    ``init_empty_weights``). ``None`` for a quantised model (its bytes per parameter
    are not the dtype's). A config that cannot be read is a :class:`ModelFolderError`.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFolderError(name_or_path, "model", exc) from None
    if getattr(config, "quantization_config", None):
        return None
    try:
        from accelerate import init_empty_weights
    except ImportError:  # pragma: no cover - accelerate ships with the training extra
        init_empty_weights = None
    ctx = init_empty_weights() if init_empty_weights is not None else torch.device("meta")
    with ctx:
        model = AutoModelForCausalLM.from_config(config)
    n = sum(p.numel() for p in model.parameters())
    dt = torch_dtype(dtype, device)
    return n * dt.itemsize, str(dt).removeprefix("torch.")


def placement_memory(
    device: str, device_map: str | dict[str, Any] | None, max_memory: dict[int | str, int] | None
) -> tuple[int, str] | None:
    """(bytes available, how to say where) for a placement; ``None`` when it cannot be told (explicit maps, mps)."""
    if max_memory:
        where = ", ".join(f"{'cuda:' if isinstance(k, int) else ''}{k} {v / GIB:.0f} GiB" for k, v in max_memory.items())
        return sum(max_memory.values()), f"--max-memory allows {sum(max_memory.values()) / GIB:.0f} GiB ({where})"
    if isinstance(device_map, dict):
        return None
    if device_map is not None:  # auto / balanced / sequential: every GPU, then host RAM (accelerate offloads there)
        names = [f"cuda:{i}" for i in range(gpu_count())] + ["cpu"]
        free = [free_memory(n) for n in names]
        if any(f is None for f in free):
            return None
        total = sum(f for f in free if f is not None)
        gpus = f"{len(names) - 1} GPU(s) and host RAM" if len(names) > 1 else "host RAM"
        return total, f"{gpus} have {total / GIB:.0f} GiB free"
    free = free_memory(device)
    if free is None:
        return None
    return free, f"{device} has {free / GIB:.0f} GiB free"


def check_fits(
    name_or_path: str,
    *,
    dtype: str = "auto",
    device: str = "auto",
    device_map: str | dict[str, Any] | None = None,
    max_memory: str | dict[Any, Any] | None = None,
    what: str = "model",
    hint: str | None = None,
) -> None:
    """Refuse, with :class:`ModelTooLarge`, weights larger than the memory of their placement.

    Weights only: activations, gradients and caches come on top, so passing this check
    is necessary, not sufficient. Skipped under DeepSpeed ZeRO-3 (weights are partitioned
    as they load) and where the available memory cannot be told.
    """
    try:
        from transformers.integrations import is_deepspeed_zero3_enabled

        if is_deepspeed_zero3_enabled():
            return
    except ImportError:  # pragma: no cover
        pass
    device = resolve_device(device)
    limits = parse_max_memory(max_memory)
    if limits and device_map is None:
        device_map = "auto"
    need = weight_bytes(name_or_path, dtype, device)
    have = placement_memory(device, device_map, limits)
    if need is None or have is None or need[0] <= have[0]:
        return
    if hint is None:
        hint = ("raise max_memory, add devices or use a smaller dtype" if device_map is not None
                else "use device_map='auto' (with max_memory) or a smaller dtype")
    raise ModelTooLarge(
        f"{what} {name_or_path}: needs about {need[0] / GIB:.0f} GiB of weights in {need[1]}; {have[1]}: {hint}"
    )


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

    from leaf.gguf import resolve

    name_or_path = resolve(name_or_path)  # a .gguf source -> its cached converted folder
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
    max_memory: str | dict[Any, Any] | None = None,
    attn_implementation: str | None = None,
    trainable: bool = False,
    what: str = "model",
    hint: str | None = None,
    tokenizer: Any = None,
) -> Any:
    """A causal LM in eval mode; frozen (``requires_grad=False``) unless ``trainable``.

    ``max_memory`` (a ``"0=70GiB,cpu=100GiB"`` string or accelerate's dict) caps each
    device of the placement and implies ``device_map="auto"``. A model whose weights
    cannot fit is refused before loading (:func:`check_fits`; ``what`` and ``hint``
    word that one-line error: ``"teacher"``, the flags to change). Weights that do not
    load (truncated or damaged files, a ``config.json`` that disagrees with them) or
    hold NaN / infinite values, and a ``tokenizer`` with ids beyond the embedding, are
    one-line errors naming the folder.
    """
    from transformers import AutoModelForCausalLM

    from leaf.gguf import resolve

    name_or_path = resolve(name_or_path)  # a .gguf source -> its cached converted folder
    device = resolve_device(device)
    limits = parse_max_memory(max_memory)
    if limits and device_map is None:
        device_map = "auto"
    check_fits(name_or_path, dtype=dtype, device=device, device_map=device_map, max_memory=limits, what=what, hint=hint)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype, device)}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if limits:
        kwargs["max_memory"] = limits
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    from safetensors import SafetensorError

    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise ModelFolderError(name_or_path, "model", exc) from None
    except RuntimeError as exc:
        if "mismatch" not in str(exc):  # not a load error we can word: keep the traceback (leaf --debug)
            raise
        raise ModelFolderError(name_or_path, "model", RuntimeError(
            "the weights' shapes do not match config.json (e.g. its vocab_size)")) from None
    check_finite_weights(model, name_or_path, what)
    if tokenizer is not None:
        check_vocabulary(model, tokenizer, name_or_path, what)
    if device_map is None:
        model.to(device)
    model.eval()
    if not trainable:
        model.requires_grad_(False)
    return model


def input_device(model: Any) -> Any:
    """Where input ids must go: the device of the input embedding (also under ``device_map``)."""
    return model.get_input_embeddings().weight.device


#: Attention implementations whose kernels skip the other sequences of a packed row (variable-length flash
#: attention, flex attention's block mask); SDPA and eager get a dense tokens x tokens block-causal mask instead.
VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3", "flex_attention")


PACKING_CHOICES = ("auto", "on", "off")

#: The help text of the commands' ``--attention`` option.
ATTENTION_HELP = ("the models' attention implementation (transformers' attn_implementation): sdpa, eager, "
                  "flash_attention_2 (the flash-attn package, a GPU), flex_attention, or a kernels-hub name; "
                  "default: transformers' choice (sdpa). With flash_attention_2 or flex_attention, --packing auto "
                  "packs")


def packing_help(what: str) -> str:
    """The help text of a command's ``--packing`` option (``what``: what it packs)."""
    return (f"packed sequences: {what} end to end in one row with no padding, position ids restarting at each "
            "sample and attention confined to it (the same numbers as padded rows): on, off, or auto = on when "
            "the model's attention kernel skips the other samples' tokens (flash-attention, flex attention) "
            "and off with SDPA / eager, where the block mask is a dense tokens x tokens mask")


def use_packing(choice: str, model: Any) -> bool:
    """Pack sequences (``--packing on|off|auto``)? ``auto``: when ``model``'s attention implementation is one of
    :data:`VARLEN_ATTENTION` (its cost then follows the real tokens, not the row's length squared)."""
    if choice not in PACKING_CHOICES:
        raise ConfigError(f"packing must be auto, on or off, got {choice!r}")
    if choice != "auto":
        return choice == "on"
    config = getattr(model, "config", None)
    impl = str(getattr(config, "_attn_implementation", "") or "")
    return any(impl.endswith(name) for name in VARLEN_ATTENTION)
