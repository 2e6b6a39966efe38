"""Detection speed and memory: leaf's saliency vs the reference code's naive way, in one process.

Naive (what the authors' script does): one sample at a time, model in train
mode with every parameter requiring grad, full-sequence logits and the HF
label loss, ``loss.backward()`` -> the input-embedding gradient is read from a
retained ``.grad`` while a full parameter gradient is allocated too.

leaf: :func:`leaf.detect.saliency.embedding_saliency` -- eval mode, frozen
parameters (input gradients only), logits only where they predict response
tokens, batched with right padding.

Both score the same token sequences (instruction + response, the response
being the last tokens) with the same model. Throughput of both is timed in
this process, under the normal allocator; peak memory of both is measured in
one child process whose allocator returns freed buffers to the OS (see
benchmarks/memory.py; that mode is too slow to time anything under). The
script prints and writes (``--json``) samples/s and peak memory of both, their
ratios, and leaf's achieved FLOP/s as a share of a large fp32 matrix product
measured in the same run.

    python benchmarks/bench_detect.py            # both configurations, as in docs/benchmarks.md
    python benchmarks/bench_detect.py --quick    # a fast smoke run
    python benchmarks/bench_detect.py --device cuda --dtype bfloat16 --config gpu   # on a GPU
    python benchmarks/bench_detect.py --config smollm2     # real SmolLM2-135M weights (--config gemma3: 262k vocab)

On a GPU (``--device cuda``): models and inputs live there in ``--dtype``
(SDPA attention as on CPU), times are taken after ``torch.cuda.synchronize``,
peak memory is ``torch.cuda.max_memory_allocated`` above the allocation at
entry (in this process), and the matrix-product reference runs in ``--dtype``
at 8192 x 8192. ``--dry-run`` checks the arguments and prints the plan.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from memory import EXACT_RSS_ENV, PeakMemory, exact_rss_active  # noqa: E402

from leaf.detect.saliency import embedding_saliency  # noqa: E402
from leaf.gguf import fetched_models  # noqa: E402

CONFIGS = {
    # ~36M parameters (tied embeddings, like LLaMA-3.2-1B), 256-token samples
    "medium": dict(hidden=512, layers=6, heads=8, inter=1408, vocab=32000, seq=256, resp=64, samples=16,
                   batch_sizes=(1, 2, 4, 8)),
    # ~2M parameters, 64-token samples: per-call overhead dominates
    "small": dict(hidden=192, layers=2, heads=4, inter=528, vocab=8000, seq=64, resp=16, samples=128,
                  batch_sizes=(1, 8, 16, 32, 64)),
    # for a GPU: Llama-3.2-1B's shape (1.24B parameters, GQA 32/8, vocab 128,256, tied), 1,024-token samples
    "gpu": dict(hidden=2048, layers=16, heads=32, kv_heads=8, inter=8192, vocab=128256, seq=1024, resp=512,
                samples=64, batch_sizes=(1, 8, 16)),
    # real pretrained weights (scripts/fetch_models.sh): SmolLM2-135M-Instruct, vocabulary 49,152, tied head
    "smollm2": dict(model="smollm2-135m-instruct", seq=256, resp=64, samples=16, batch_sizes=(1, 4, 8)),
    # Gemma-3-270M: vocabulary 262,144 (the output head is most of the logits' memory)
    "gemma3": dict(model="gemma3-270m", seq=256, resp=64, samples=8, batch_sizes=(1, 4, 8)),
}
CPU_CONFIGS = ("medium", "small")
#: Where the real models of the ``model`` configurations are (``LEAF_MODELS``, as scripts/fetch_models.sh).
MODELS = fetched_models()


def real_shape(cfg: dict) -> dict:
    """A ``model`` configuration with the shape numbers of its real checkpoint's config.json filled in."""
    if "model" not in cfg:
        return cfg
    path = MODELS / cfg["model"]
    if not (path / "config.json").is_file():
        raise SystemExit(f"{path}: not found; run scripts/fetch_models.sh (or set LEAF_MODELS)")
    c = json.loads((path / "config.json").read_text())
    c = c.get("text_config", c)
    return dict(cfg, path=str(path), hidden=c["hidden_size"], layers=c["num_hidden_layers"], vocab=c["vocab_size"])

#: Where and in which dtype the models run (``--device`` / ``--dtype``).
DEVICE = torch.device("cpu")
DTYPE = torch.float32


def cuda() -> bool:
    return DEVICE.type == "cuda"


def sync() -> None:
    if cuda():
        torch.cuda.synchronize(DEVICE)


def build(cfg: dict) -> LlamaForCausalLM:
    torch.manual_seed(0)
    if "path" in cfg:  # real weights
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(cfg["path"], dtype=DTYPE, attn_implementation="sdpa").to(DEVICE)
    config = LlamaConfig(
        vocab_size=cfg["vocab"], hidden_size=cfg["hidden"], intermediate_size=cfg["inter"],
        num_hidden_layers=cfg["layers"], num_attention_heads=cfg["heads"],
        num_key_value_heads=cfg.get("kv_heads", cfg["heads"]), max_position_embeddings=2 * cfg["seq"],
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM._from_config(config, attn_implementation="sdpa").to(DEVICE, DTYPE)


def samples(cfg: dict) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    # lengths vary by up to 10 % so batching pays for some padding, as on real data
    lengths = torch.randint(int(cfg["seq"] * 0.9), cfg["seq"] + 1, (cfg["samples"],), generator=g)
    return [torch.randint(0, cfg["vocab"], (int(n),), generator=g).to(DEVICE) for n in lengths]


def naive(model: LlamaForCausalLM, seqs: list[torch.Tensor], resp: int) -> list[torch.Tensor]:
    model.train()
    model.requires_grad_(True)
    out = []
    for ids in seqs:
        ids = ids[None]
        labels = ids.clone()
        labels[:, : ids.shape[1] - resp] = -100
        embeds = model.get_input_embeddings()(ids)
        embeds.retain_grad()
        loss = model(inputs_embeds=embeds, labels=labels).loss
        loss.backward()
        out.append(embeds.grad[0].norm(dim=-1).detach())
        model.zero_grad(set_to_none=True)
    return out


def ours(model: LlamaForCausalLM, seqs: list[torch.Tensor], resp: int, batch_size: int) -> list[torch.Tensor]:
    """leaf's way, batching as ``leaf detect`` does: samples sorted by length, then chunked."""
    model.eval()
    model.requires_grad_(False)
    order = sorted(range(len(seqs)), key=lambda i: (len(seqs[i]), i))
    out: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        chunk = [seqs[i] for i in idx]
        width = max(len(s) for s in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long, device=DEVICE)
        att = torch.zeros(len(chunk), width, dtype=torch.long, device=DEVICE)
        tgt = torch.zeros(len(chunk), width, dtype=torch.bool, device=DEVICE)
        for i, s in enumerate(chunk):
            ids[i, : len(s)] = s
            att[i, : len(s)] = 1
            tgt[i, len(s) - resp : len(s)] = True
        sal, _ = embedding_saliency(model, ids, att, tgt)
        for row, (i, s) in enumerate(zip(idx, chunk)):
            out[i] = sal[row, : len(s)]
    return out


REPEATS = 3


def timed(fn, *args) -> tuple[float, list]:
    """Best of :data:`REPEATS` timings (the least disturbed by other work on the machine)."""
    best, result = float("inf"), None
    for _ in range(REPEATS):
        sync()
        t0 = time.perf_counter()
        result = fn(*args)
        sync()
        best = min(best, time.perf_counter() - t0)
    return best, result


def peak_mib(fn, *args) -> float:
    if cuda():  # GPU allocations above the level at entry
        sync()
        torch.cuda.reset_peak_memory_stats(DEVICE)
        base = torch.cuda.memory_allocated(DEVICE)
        fn(*args)
        sync()
        return (torch.cuda.max_memory_allocated(DEVICE) - base) / 2**20
    with PeakMemory() as mem:
        fn(*args)
    return mem.peak_mib


def memory_run(cfg: dict, model: LlamaForCausalLM | None = None) -> dict:
    """Peak memory of naive and of leaf at each batch size (on CPU: call under EXACT_RSS_ENV)."""
    model = model if model is not None else build(cfg)
    seqs = samples(cfg)[: max(cfg["batch_sizes"])]
    naive(model, seqs[:1], cfg["resp"])
    ours(model, seqs[:1], cfg["resp"], 1)
    return {"naive": peak_mib(naive, model, seqs, cfg["resp"]),
            "leaf": {bs: peak_mib(ours, model, seqs, cfg["resp"], bs) for bs in cfg["batch_sizes"]}}


def memory_in_child(name: str, cfg: dict) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", name, "--samples", str(cfg["samples"])]
    out = subprocess.run(cmd, env={**os.environ, **EXACT_RSS_ENV}, check=True, capture_output=True, text=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return {"naive": got["naive"], "leaf": {int(k): v for k, v in got["leaf"].items()}}


def detection_flops(cfg: dict, seqs: list[torch.Tensor], n_params_layers: int) -> float:
    """Estimated FLOPs of leaf's pass: forward + an input-gradient backward of about the same cost."""
    d, L, V = cfg["hidden"], cfg["layers"], cfg["vocab"]
    total = 0.0
    for s in seqs:
        T = len(s)
        forward = 2 * T * n_params_layers + 4 * L * T * T * d + 2 * cfg["resp"] * d * V
        total += 2 * forward
    return total


def matmul_flops_per_s(n: int = 2048, reps: int = 5, trials: int = 3) -> float:
    """Best of a few timings of a large matrix product (fp32 on CPU; --dtype at 8192 on a GPU): the practical peak."""
    if cuda():
        n, reps = 8192, 20
    a, b = torch.randn(n, n, device=DEVICE, dtype=DTYPE), torch.randn(n, n, device=DEVICE, dtype=DTYPE)
    a @ b
    best = 0.0
    for _ in range(trials):
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def run_config(name: str, cfg: dict) -> dict:
    model = build(cfg)
    seqs = samples(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    n_layers_params = sum(p.numel() for n, p in model.named_parameters() if ".layers." in n)
    # warm-up both paths (allocator, kernels)
    naive(model, seqs[:2], cfg["resp"])
    ours(model, seqs[:2], cfg["resp"], 2)

    peak_before = matmul_flops_per_s()
    t_naive, ref = timed(naive, model, seqs, cfg["resp"])
    memory = memory_run(cfg, model) if cuda() else memory_in_child(name, cfg)
    m_naive = memory["naive"]
    rows = []
    for bs in cfg["batch_sizes"]:
        t, got = timed(ours, model, seqs, cfg["resp"], bs)
        m = memory["leaf"][bs]
        err = max(float(((a.float() - b.float()).abs() / b.float().abs().clamp_min(1e-12)).max()) for a, b in zip(got, ref))
        rows.append({"batch_size": bs, "seconds": t, "samples_per_s": len(seqs) / t, "peak_mib": m,
                     "max_rel_diff_vs_naive": err})
    peak = max(peak_before, matmul_flops_per_s())
    best = max(rows, key=lambda r: r["samples_per_s"])
    bs1 = next(r for r in rows if r["batch_size"] == 1)
    achieved = detection_flops(cfg, seqs, n_layers_params) / best["seconds"]
    return {
        "config": name,
        "params_millions": n_params / 1e6,
        "tokens_per_sample": cfg["seq"],
        "samples": len(seqs),
        "naive": {"samples_per_s": len(seqs) / t_naive, "peak_mib": m_naive},
        "leaf": rows,
        "best_batch_size": best["batch_size"],
        "throughput_ratio_best": best["samples_per_s"] / (len(seqs) / t_naive),
        "memory_ratio_bs1": bs1["peak_mib"] / m_naive,
        "matmul_gflops": peak / 1e9,
        "leaf_gflops_best": achieved / 1e9,
        "flops_share_of_matmul": achieved / peak,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(DEVICE) if cuda() else "cpu",
        "dtype": str(DTYPE).removeprefix("torch."),
        "tokens_per_s_best": best["samples_per_s"] * sum(len(s) for s in seqs) / len(seqs),
        "peak_memory": "cuda max_memory_allocated above entry" if cuda() else "rss above entry",
        "cuda_max_memory_allocated_mib": torch.cuda.max_memory_allocated(DEVICE) / 2**20 if cuda() else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    ap.add_argument("--quick", action="store_true", help="fewer samples, one timing each (smoke run)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--samples", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--memory-child", choices=list(CONFIGS), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="model weights' dtype")
    ap.add_argument("--dry-run", action="store_true", help="check the arguments, print the plan, run nothing")
    args = ap.parse_args()
    global REPEATS, DEVICE, DTYPE
    if not (args.device == "cpu" or args.device.startswith("cuda")):
        ap.error(f"--device {args.device}: use cpu or cuda[:N]")
    DEVICE, DTYPE = torch.device(args.device), getattr(torch, args.dtype)
    names = ([*CPU_CONFIGS] if not cuda() else ["gpu"]) if args.config == "all" else [args.config]
    if args.dry_run:
        print(f"bench_detect: configs {', '.join(names)}, device {args.device}, dtype {args.dtype}, sdpa attention, "
              f"{'1 timing' if args.quick else f'best of {REPEATS}'}, json {args.json}")
        return
    if cuda() and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA GPU here")
    if args.quick:
        REPEATS = 1
    if args.memory_child:
        assert exact_rss_active(), "the memory child must run under EXACT_RSS_ENV"
        cfg = real_shape(dict(CONFIGS[args.memory_child], samples=args.samples))
        cfg["batch_sizes"] = tuple(b for b in cfg["batch_sizes"] if b <= cfg["samples"])
        print(json.dumps(memory_run(cfg)))
        return
    results = []
    for name in names:
        cfg = real_shape(dict(CONFIGS[name]))
        if args.quick:
            cfg["samples"] = max(4, cfg["samples"] // 4)
            cfg["batch_sizes"] = tuple(b for b in cfg["batch_sizes"] if b <= cfg["samples"])
        r = run_config(name, cfg)
        results.append(r)
        print(f"\n== {name}: {r['params_millions']:.1f}M parameters, {cfg['seq']}-token samples, "
              f"{r['samples']} samples, {r['threads']} threads")
        print(f"naive (1 at a time, train mode, parameter grads): {r['naive']['samples_per_s']:.2f} samples/s, "
              f"peak {r['naive']['peak_mib']:.0f} MiB")
        for row in r["leaf"]:
            print(f"leaf batch {row['batch_size']:>3}: {row['samples_per_s']:.2f} samples/s, "
                  f"peak {row['peak_mib']:.0f} MiB, max rel diff vs naive {row['max_rel_diff_vs_naive']:.1e}")
        print(f"throughput ratio (best batch {r['best_batch_size']}): {r['throughput_ratio_best']:.2f}x; "
              f"memory ratio at batch 1: {r['memory_ratio_bs1']:.2f}x")
        print(f"{r['dtype']} matmul {r['matmul_gflops']:.1f} GFLOP/s; leaf {r['leaf_gflops_best']:.1f} GFLOP/s "
              f"= {r['flops_share_of_matmul']:.0%} of it")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
