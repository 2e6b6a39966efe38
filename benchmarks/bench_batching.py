"""Detection batching and memory: fixed batch size vs ``--max-tokens-per-batch``; checkpointing's memory slope.

1. Throughput. A set of samples whose lengths spread evenly from 64 to 2,048
   tokens (shuffled), scored by :func:`leaf.detect.saliency.embedding_saliency`
   on a tiny random llama (:func:`leaf.tiny.build_model`, small vocabulary),
   batched three ways with :func:`leaf.batching.length_batches` as ``leaf
   detect`` does:

   * ``fixed, input order`` -- ``--batch-size B`` without sorting (what a naive loop does; context only);
   * ``fixed`` -- ``--batch-size B`` (leaf sorts by length);
   * ``max-tokens`` -- ``--max-tokens-per-batch M`` (count capped at ``--cap``).

   Reported: samples/s of each and the ratio max-tokens / fixed (goal >= 1.5).
2. Memory. Peak memory of one sample's saliency at a few lengths, with and
   without ``gradient_checkpointing=True``, measured in a child process whose
   allocator returns freed buffers to the OS (benchmarks/memory.py); the slope
   in MiB per 1,000 tokens (least squares) of each and their ratio (goal <= 0.5).

    python benchmarks/bench_batching.py --json benchmarks/results/bench_batching_cpu.json
    python benchmarks/bench_batching.py --quick     # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from memory import EXACT_RSS_ENV, PeakMemory, exact_rss_active  # noqa: E402

from leaf.batching import length_batches, pad  # noqa: E402
from leaf.detect.saliency import embedding_saliency  # noqa: E402
from leaf.tiny import build_model, build_tokenizer  # noqa: E402


def _model(hidden: int, layers: int, max_len: int):
    tok = build_tokenizer(style="llama3")
    model = build_model(tok, hidden_size=hidden, num_layers=layers, num_heads=4, max_position_embeddings=max_len)
    model.requires_grad_(False)
    return model, len(tok)


def _inputs(lengths: list[int], vocab: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(n)] for n in lengths]


def _score(model, seqs: list[list[int]], checkpointing: bool = False) -> None:
    ids, mask = pad(seqs, 0)
    target = torch.zeros_like(ids, dtype=torch.bool)
    for row, s in enumerate(seqs):
        target[row, len(s) - len(s) // 4 : len(s)] = True  # the response: the last quarter
    embedding_saliency(model, ids, mask, target, gradient_checkpointing=checkpointing)


def throughput(args) -> dict:
    model, vocab = _model(args.hidden, args.layers, 2048)
    lengths = [round(64 + (2048 - 64) * k / (args.samples - 1)) for k in range(args.samples)]
    random.Random(1).shuffle(lengths)
    seqs = _inputs(lengths, vocab)
    plans = {
        "fixed, input order": [list(range(i, min(i + args.batch_size, len(seqs)))) for i in range(0, len(seqs), args.batch_size)],
        "fixed": length_batches(lengths, args.batch_size),
        "max-tokens": length_batches(lengths, args.cap, args.max_tokens),
    }
    _score(model, [seqs[0][:64]])  # warm-up
    out = {}
    for name, batches in plans.items():
        t0 = time.perf_counter()
        for b in batches:
            _score(model, [seqs[i] for i in b])
        dt = time.perf_counter() - t0
        padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
        out[name] = {"samples_per_s": round(len(seqs) / dt, 3), "seconds": round(dt, 2), "batches": len(batches),
                     "padded_tokens": padded, "real_tokens": sum(lengths)}
        print(f"{name:<20} {out[name]['samples_per_s']:8.3f} samples/s  {len(batches):3d} batches  "
              f"padding {padded / sum(lengths) - 1:6.1%}", flush=True)
    out["ratio_max_tokens_vs_fixed"] = round(out["max-tokens"]["samples_per_s"] / out["fixed"]["samples_per_s"], 3)
    out["ratio_max_tokens_vs_fixed_input_order"] = round(
        out["max-tokens"]["samples_per_s"] / out["fixed, input order"]["samples_per_s"], 3)
    return out


def memory_child(args) -> dict:
    assert exact_rss_active(), "the memory child must run under EXACT_RSS_ENV"
    model, vocab = _model(args.mem_hidden, args.mem_layers, max(args.lengths))
    out: dict = {}
    for ckpt in (False, True):
        _score(model, _inputs([64], vocab), ckpt)  # warm-up
        peaks = []
        for n in args.lengths:
            seq = _inputs([n], vocab, seed=n)
            with PeakMemory() as m:
                _score(model, seq, ckpt)
            peaks.append(round(m.peak_mib, 2))
        out["checkpointing" if ckpt else "plain"] = peaks
    return out


def _slope(xs: list[int], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs) * 1000


def memory(args) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", "--mem-hidden", str(args.mem_hidden), "--mem-layers",
           str(args.mem_layers), "--lengths", *map(str, args.lengths)]
    proc = subprocess.run(cmd, env={**os.environ, **EXACT_RSS_ENV}, check=True, capture_output=True, text=True)
    peaks = json.loads(proc.stdout.strip().splitlines()[-1])
    out = {"lengths": args.lengths, "peak_mib": peaks}
    for k in ("plain", "checkpointing"):
        out[f"slope_mib_per_1000_tokens_{k}"] = round(_slope(args.lengths, peaks[k]), 2)
    out["slope_ratio"] = round(out["slope_mib_per_1000_tokens_checkpointing"] / out["slope_mib_per_1000_tokens_plain"], 3)
    for k in ("plain", "checkpointing"):
        print(f"memory {k:<14} " + "  ".join(f"{n}: {p:7.1f} MiB" for n, p in zip(args.lengths, peaks[k]))
              + f"   slope {out[f'slope_mib_per_1000_tokens_{k}']:.1f} MiB / 1,000 tokens", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--cap", type=int, default=64, help="count cap of a max-tokens batch")
    ap.add_argument("--mem-hidden", type=int, default=256)
    ap.add_argument("--mem-layers", type=int, default=6)
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.memory_child:
        print(json.dumps(memory_child(args)))
        return
    if args.quick:
        args.samples, args.lengths = 12, [128, 256, 512]
    result = {
        "command": " ".join(["python", "benchmarks/bench_batching.py", *sys.argv[1:]]),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "memory_child")},
        "throughput": throughput(args),
        "memory": memory(args),
    }
    t, m = result["throughput"], result["memory"]
    result["goals"] = {"max_tokens_ratio >= 1.5": t["ratio_max_tokens_vs_fixed"] >= 1.5,
                       "checkpointed_slope_ratio <= 0.5": m["slope_ratio"] <= 0.5}
    print(f"max-tokens / fixed: {t['ratio_max_tokens_vs_fixed']}x; checkpointed / plain memory slope: "
          f"{m['slope_ratio']}x; goals {result['goals']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
