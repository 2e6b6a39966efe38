"""Back-of-the-envelope sizes and times of a LeaF run, from a model's config alone (pure Python).

Every function is plain arithmetic on numbers a published ``config.json`` gives
(no torch, no transformers, nothing of leaf above ``leaf.config``), so a plan
can be made on a laptop before a cluster is booked. docs/scaling.md shows the
arithmetic for the paper's setup; the tests check it against hand sums.

Sizes
    :func:`param_count` (dense decoder-only transformers of the LLaMA / Qwen2
    family), :func:`weights_bytes`, :func:`activation_bytes`,
    :func:`training_bytes_per_gpu` (mixed-precision AdamW, optionally sharded
    ZeRO-3 / FSDP style), :func:`kv_bytes_per_token`.
FLOPs and times
    :func:`flops_forward` (2 N T), :func:`flops_training` (6 N T, 8 N T with
    activation checkpointing), :func:`flops_detection` (forward + backward to
    the input only: 4 N T, 6 N T with checkpointing), :func:`stage_time`
    (FLOPs over GPUs x peak x MFU), :func:`allgather_time` (ZeRO-3's weight
    gathers), :func:`decode_tokens_per_s` (generation, memory-bandwidth bound).

Units: bytes, FLOPs, seconds. ``GB`` = 1e9 bytes, ``GiB`` = 2**30.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GIB = 2**30
GB = 10**9

#: Bytes per element of the dtypes leaf uses.
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}

#: Mixed-precision AdamW, bytes per trainable parameter: fp32 master weights 4 + fp32 gradients 4 +
#: Adam first and second moments 4 + 4 (leaf loads the student in float32 and autocasts to bf16).
ADAMW_MIXED_BYTES = 16


@dataclass(frozen=True)
class Gpu:
    """What a stage-time estimate needs of an accelerator (dense bf16 peak, no sparsity)."""

    name: str
    peak_tflops: float  #: dense bf16 tensor-core peak, TFLOP/s
    bandwidth: float  #: HBM bytes/s
    memory: float  #: bytes
    allgather: float  #: NCCL all-gather bus bandwidth inside one node, bytes/s (NVLink; an assumption)


GPUS: dict[str, Gpu] = {
    "H100": Gpu("H100 SXM", 989.0, 3.35e12, 80 * GB, 350 * GB),
    "H200": Gpu("H200 SXM", 989.0, 4.8e12, 141 * GB, 350 * GB),
    "A100": Gpu("A100 SXM 80GB", 312.0, 2.04e12, 80 * GB, 230 * GB),
}


def gpu_for(device_name: str) -> Gpu | None:
    """The :data:`GPUS` entry whose key occurs in a ``torch.cuda.get_device_name()`` string, else ``None``."""
    upper = device_name.upper()
    for key, gpu in GPUS.items():
        if key in upper:
            return gpu
    return None


#: Published configs (the fields these estimates read) of the paper's models.
MODELS: dict[str, dict[str, Any]] = {
    "meta-llama/Llama-3.3-70B-Instruct": dict(
        model_type="llama", hidden_size=8192, num_hidden_layers=80, intermediate_size=28672,
        num_attention_heads=64, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
    "meta-llama/Llama-3.2-3B-Instruct": dict(
        model_type="llama", hidden_size=3072, num_hidden_layers=28, intermediate_size=8192,
        num_attention_heads=24, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "meta-llama/Llama-3.2-1B-Instruct": dict(
        model_type="llama", hidden_size=2048, num_hidden_layers=16, intermediate_size=8192,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True),
    "Qwen/Qwen2.5-72B-Instruct": dict(
        model_type="qwen2", hidden_size=8192, num_hidden_layers=80, intermediate_size=29568,
        num_attention_heads=64, num_key_value_heads=8, vocab_size=152064, tie_word_embeddings=False),
    "Qwen/Qwen2.5-Math-1.5B-Instruct": dict(
        model_type="qwen2", hidden_size=1536, num_hidden_layers=28, intermediate_size=8960,
        num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
}


def _dims(config: Mapping[str, Any]) -> tuple[int, int, int, int, int, int, int]:
    """(hidden d, layers L, intermediate I, heads h, kv heads, head_dim, vocab V)."""
    d = int(config["hidden_size"])
    h = int(config["num_attention_heads"])
    kv = int(config.get("num_key_value_heads") or h)
    hd = int(config.get("head_dim") or d // h)
    return d, int(config["num_hidden_layers"]), int(config["intermediate_size"]), h, kv, hd, int(config["vocab_size"])


def layer_params(config: Mapping[str, Any]) -> int:
    """Parameters of one decoder layer: attention (q, k, v, o; qkv biases for Qwen2), gated MLP, two norms."""
    d, _, inter, h, kv, hd, _ = _dims(config)
    attn = d * h * hd + 2 * d * kv * hd + h * hd * d
    if config.get("attention_bias") or config.get("model_type") == "qwen2":  # Qwen2 biases q, k, v
        attn += h * hd + 2 * kv * hd
    if config.get("attention_bias"):  # LLaMA's attention_bias also biases o
        attn += d
    mlp = 3 * d * inter + (2 * inter + d if config.get("mlp_bias") else 0)
    return attn + mlp + 2 * d


def param_count(config: Mapping[str, Any]) -> int:
    """Parameters of a dense decoder-only LM from its ``config.json`` fields.

    Embedding V d + L layers + final norm d + an output head V d unless tied
    (``tie_word_embeddings``, default True as in transformers).
    """
    d, layers, _, _, _, _, vocab = _dims(config)
    tied = config.get("tie_word_embeddings", True)
    return vocab * d * (1 if tied else 2) + layers * layer_params(config) + d


def _params(model: Mapping[str, Any] | int) -> int:
    return model if isinstance(model, int) else param_count(model)


def weights_bytes(model: Mapping[str, Any] | int, dtype: str = "bfloat16") -> int:
    """Bytes of the weights: parameters (a config or a count) x bytes of ``dtype``."""
    return _params(model) * DTYPE_BYTES[dtype]


def activation_bytes_per_token(config: Mapping[str, Any], *, checkpointing: bool = False, dtype: str = "bfloat16") -> int:
    """Bytes one token keeps for the backward pass over all layers (SDPA/flash attention: no T x T scores).

    Per layer, in ``dtype`` (b bytes): the layer input, the attention norm's output,
    q/k/v, the attention output, the residual sum, the MLP norm's output, gate, up,
    act(gate) and their product: b (6 d + 2 kv hd + 4 I); plus the two RMSNorms'
    fp32 inputs, 2 x 4 d. With checkpointing only each layer's input stays: b d.
    """
    d, layers, inter, _, kv, hd, _ = _dims(config)
    b = DTYPE_BYTES[dtype]
    if checkpointing:
        return layers * b * d
    return layers * (b * (6 * d + 2 * kv * hd + 4 * inter) + 8 * d)


def activation_bytes(config: Mapping[str, Any], tokens: int, *, checkpointing: bool = False,
                     dtype: str = "bfloat16") -> int:
    """Activations kept for backward by ``tokens`` tokens; with checkpointing, plus one layer recomputed at a time."""
    total = tokens * activation_bytes_per_token(config, checkpointing=checkpointing, dtype=dtype)
    if checkpointing:
        layers = int(config["num_hidden_layers"])
        total += tokens * activation_bytes_per_token(config, dtype=dtype) // layers
    return total


def logits_bytes(vocab: int, rows: int, *, copies: int = 3, dtype: str = "bfloat16") -> int:
    """Full-vocabulary logits of ``rows`` loss positions, ``copies`` of them (student, its gradient, teacher)."""
    return copies * rows * vocab * DTYPE_BYTES[dtype]


def training_bytes_per_gpu(
    config: Mapping[str, Any],
    *,
    tokens_per_gpu: int,
    gpus: int = 1,
    sharded: bool = True,
    checkpointing: bool = True,
    loss_rows: int | None = None,
    chunk_rows: int = 1024,
) -> dict[str, int]:
    """Memory of one GPU training ``config`` (full parameters, mixed-precision AdamW), item by item.

    ``states``: 16 B/param (:data:`ADAMW_MIXED_BYTES`), divided over ``gpus`` when
    ``sharded`` (ZeRO-3 / FSDP full shard); ``activations``: :func:`activation_bytes`
    of the micro-batch's ``tokens_per_gpu``; ``logits``: the loss positions'
    (``loss_rows``, default all tokens) student logits, their gradient and the teacher's
    in bf16 plus ~4 fp32 loss chunks of ``chunk_rows``. ``total`` sums them (no
    teacher weights, no framework overhead: add those).
    """
    n = param_count(config)
    vocab = int(config["vocab_size"])
    rows = tokens_per_gpu if loss_rows is None else loss_rows
    out = {
        "states": n * ADAMW_MIXED_BYTES // (gpus if sharded else 1),
        "activations": activation_bytes(config, tokens_per_gpu, checkpointing=checkpointing),
        "logits": logits_bytes(vocab, rows) + 4 * min(rows, chunk_rows) * vocab * 4,
    }
    out["total"] = sum(out.values())
    return out


def kv_bytes_per_token(config: Mapping[str, Any], dtype: str = "bfloat16") -> int:
    """KV-cache bytes of one token of context: 2 (k, v) x L x kv heads x head_dim x bytes."""
    _, layers, _, _, kv, hd, _ = _dims(config)
    return 2 * layers * kv * hd * DTYPE_BYTES[dtype]


def flops_forward(params: int, tokens: float) -> float:
    """2 N T: one multiply-add per parameter per token (attention's T^2 term left out)."""
    return 2.0 * params * tokens


def flops_training(params: int, tokens: float, *, checkpointing: bool = False) -> float:
    """6 N T (forward, backward to activations and to weights); 8 N T when activations are recomputed."""
    return (8.0 if checkpointing else 6.0) * params * tokens


def flops_detection(params: int, tokens: float, *, checkpointing: bool = False) -> float:
    """leaf's saliency pass: forward + backward to the input only (parameters frozen, no weight gradients).

    4 N T; 6 N T (= 3 x 2 N T) with ``--gradient-checkpointing`` (the forward is recomputed).
    """
    return (6.0 if checkpointing else 4.0) * params * tokens


def stage_time(flops: float, *, gpus: int = 8, peak_tflops: float = 989.0, mfu: float = 0.4) -> float:
    """Seconds for ``flops`` on ``gpus`` computing GPUs at ``mfu`` of a ``peak_tflops`` peak each."""
    return flops / (gpus * peak_tflops * 1e12 * mfu)


def allgather_time(nbytes: float, *, gpus: int = 8, bus_bandwidth: float = 350 * GB) -> float:
    """Seconds to all-gather ``nbytes`` of sharded weights over ``gpus`` (each receives (g-1)/g of them)."""
    return nbytes * (gpus - 1) / gpus / bus_bandwidth


def decode_tokens_per_s(
    config: Mapping[str, Any],
    *,
    batch: int,
    context: int,
    gpu: Gpu = GPUS["H100"],
    tensor_parallel: int = 1,
    dtype: str = "bfloat16",
    efficiency: float = 0.6,
    mfu: float = 0.4,
) -> float:
    """Generated tokens/s of one model replica: each decoding step reads every weight and the batch's KV cache once.

    step time = (weights + batch x context x KV bytes per token) / (tensor_parallel x HBM bandwidth x efficiency),
    tokens/s = batch / step time, capped by the compute bound 2 N per token at ``mfu``.
    """
    n = param_count(config)
    step_bytes = weights_bytes(n, dtype) + batch * context * kv_bytes_per_token(config, dtype)
    memory_bound = batch * tensor_parallel * gpu.bandwidth * efficiency / step_bytes
    compute_bound = tensor_parallel * gpu.peak_tflops * 1e12 * mfu / flops_forward(n, 1)
    return min(memory_bound, compute_bound)
