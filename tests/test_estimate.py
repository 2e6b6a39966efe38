"""leaf.estimate: the numbers of docs/scaling.md, checked against arithmetic done by hand."""

from __future__ import annotations

import pytest

from leaf.estimate import (
    GB,
    GPUS,
    MODELS,
    activation_bytes,
    activation_bytes_per_token,
    allgather_time,
    decode_tokens_per_s,
    flops_detection,
    flops_forward,
    flops_training,
    gpu_for,
    kv_bytes_per_token,
    layer_params,
    param_count,
    stage_time,
    training_bytes_per_gpu,
    weights_bytes,
)

LLAMA_70B = MODELS["meta-llama/Llama-3.3-70B-Instruct"]
LLAMA_1B = MODELS["meta-llama/Llama-3.2-1B-Instruct"]


def test_llama_3_3_70b_has_70_55_billion_parameters():
    # per layer: q 8192^2 + k, v 2 x 8192 x (8 x 128) + o 8192^2 + MLP 3 x 8192 x 28672 + 2 norms x 8192
    layer = 8192 * 8192 + 2 * 8192 * 1024 + 8192 * 8192 + 3 * 8192 * 28672 + 2 * 8192
    assert layer == 855_654_400 == layer_params(LLAMA_70B)
    # untied: embedding and output head each 128256 x 8192; final norm 8192
    total = 80 * layer + 2 * 128256 * 8192 + 8192
    assert param_count(LLAMA_70B) == total == 70_553_706_496
    assert weights_bytes(LLAMA_70B) == 2 * total  # 141.1 GB in bf16
    assert round(weights_bytes(LLAMA_70B) / GB, 1) == 141.1


def test_llama_3_2_1b_has_1_24_billion_parameters():
    layer = 2048 * 2048 + 2 * 2048 * 512 + 2048 * 2048 + 3 * 2048 * 8192 + 2 * 2048
    total = 16 * layer + 128256 * 2048 + 2048  # tied: one embedding matrix
    assert param_count(LLAMA_1B) == total == 1_235_814_400
    assert weights_bytes(LLAMA_1B, "float32") == 4 * total


def test_the_other_models_of_the_paper_match_their_published_sizes():
    assert round(param_count(MODELS["meta-llama/Llama-3.2-3B-Instruct"]) / 1e9, 2) == 3.21
    assert round(param_count(MODELS["Qwen/Qwen2.5-72B-Instruct"]) / 1e9, 1) == 72.7  # with q, k, v biases
    assert round(param_count(MODELS["Qwen/Qwen2.5-Math-1.5B-Instruct"]) / 1e9, 2) == 1.54


@pytest.mark.parametrize("arch", ["llama", "qwen2", "llama-bias"])
def test_param_count_equals_what_transformers_builds(arch):
    """The formula counts what transformers instantiates (tiny configs, on the meta device)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    kw = dict(hidden_size=64, num_hidden_layers=3, intermediate_size=96, num_attention_heads=8,
              num_key_value_heads=2, vocab_size=1000)
    cls = Qwen2Config if arch == "qwen2" else LlamaConfig
    cfg = cls(**kw, tie_word_embeddings=arch != "llama", attention_bias=arch == "llama-bias")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    assert param_count(cfg.to_dict()) == sum(p.numel() for p in model.parameters())


def test_flops_follow_the_rules_of_thumb():
    n, t = 70_553_706_496, 1000
    assert flops_forward(n, t) == 2 * n * t
    assert flops_training(n, t) == 6 * n * t and flops_training(n, t, checkpointing=True) == 8 * n * t
    assert flops_detection(n, t) == 4 * n * t
    assert flops_detection(n, t, checkpointing=True) == 3 * flops_forward(n, t)
    # 1e18 FLOP on 8 GPUs at 40 % of 989 TFLOP/s: 1e18 / (8 x 989e12 x 0.4) = 316 s
    assert stage_time(1e18, gpus=8, peak_tflops=989, mfu=0.4) == pytest.approx(1e18 / 3.1648e15)
    assert round(stage_time(1e18)) == 316


def test_training_memory_of_the_1b_student_sharded_over_8_gpus():
    # activations per token per layer, bf16: 2 x (6 x 2048 + 2 x 512 + 4 x 8192) + fp32 norm inputs 8 x 2048
    per_layer = 2 * (6 * 2048 + 2 * 512 + 4 * 8192) + 8 * 2048
    assert per_layer == 108_544
    assert activation_bytes_per_token(LLAMA_1B) == 16 * per_layer
    assert activation_bytes_per_token(LLAMA_1B, checkpointing=True) == 16 * 2 * 2048
    assert activation_bytes(LLAMA_1B, 4096, checkpointing=True) == 4096 * (16 * 2 * 2048 + per_layer)
    got = training_bytes_per_gpu(LLAMA_1B, tokens_per_gpu=4096, gpus=8)
    assert got["states"] == 1_235_814_400 * 16 // 8  # 2.47 GB
    assert got["logits"] == 3 * 4096 * 128256 * 2 + 4 * 1024 * 128256 * 4
    assert got["total"] == got["states"] + got["activations"] + got["logits"]
    unsharded = training_bytes_per_gpu(LLAMA_1B, tokens_per_gpu=4096, gpus=8, sharded=False, checkpointing=False)
    assert unsharded["states"] == 16 * 1_235_814_400 and unsharded["activations"] == 4096 * 16 * per_layer


def test_generation_is_bounded_by_memory_bandwidth():
    assert kv_bytes_per_token(LLAMA_70B) == 2 * 80 * 8 * 128 * 2  # 320 KiB per token of context
    h100 = GPUS["H100"]
    # 70B on 8 GPUs (tensor parallel), batch 64, 320 tokens of context
    step = 141_107_412_992 + 64 * 320 * 327_680
    expected = 64 * 8 * 3.35e12 * 0.6 / step
    assert decode_tokens_per_s(LLAMA_70B, batch=64, context=320, tensor_parallel=8) == pytest.approx(expected)
    # a huge batch hits the compute bound 2 N per token instead
    cap = 989e12 * 0.4 / (2 * 1_235_814_400)
    assert decode_tokens_per_s(LLAMA_1B, batch=10**6, context=1, gpu=h100) == pytest.approx(cap)
    assert allgather_time(8e9, gpus=8, bus_bandwidth=350e9) == pytest.approx(7e9 / 350e9)


def test_gpu_names_map_to_their_peaks():
    assert gpu_for("NVIDIA H100 80GB HBM3").peak_tflops == 989
    assert gpu_for("NVIDIA H200").peak_tflops == 989
    assert gpu_for("NVIDIA A100-SXM4-80GB").peak_tflops == 312
    assert gpu_for("NVIDIA GeForce RTX 4090") is None


def test_the_module_is_pure_python():
    """The layer-2 estimate service imports no torch/transformers and nothing of leaf (a plan needs no GPU stack)."""
    import ast
    from pathlib import Path

    import leaf.estimate

    tree = ast.parse(Path(leaf.estimate.__file__).read_text())
    mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert mods <= {"__future__", "collections.abc", "dataclasses", "typing"}, mods
