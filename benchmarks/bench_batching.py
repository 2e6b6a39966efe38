"""Detection batching and memory: fixed batch size vs ``--max-tokens-per-batch``; checkpointing's memory slope.

1. Throughput. A set of samples whose lengths spread evenly from 64 to 2,048
   tokens (shuffled), scored by :func:`leaf.detect.saliency.embedding_saliency`
   on a tiny random llama (:func:`leaf.tiny.build_model`, small vocabulary),
   batched three ways with :func:`leaf.batching.length_batches` as ``leaf
   detect`` does:

   * ``fixed, input order`` -- ``--batch-size B`` without sorting (what a naive loop does; context only);
   * ``fixed`` -- ``--batch-size B`` (leaf sorts by length);
   * ``max-tokens`` -- ``--max-tokens-per-batch M`` (count capped at ``--cap``);
   * ``packed`` -- the same batches as ``max-tokens``, each as one packed row (``--packing on``: position
     ids restarting per sample, no padding; the model's own attention implementation decides what the
     block mask costs: SDPA here, a dense ``T x T`` mask).

   Reported: samples/s of each and the ratios max-tokens / fixed and packed / fixed (goal >= 1.5).
2. Training steps. One forward + backward of a tiny llama (hidden 256, 4 layers) on 8 samples, padded
   vs packed into one row (what ``leaf distill --packing off|on`` feeds the student), at 100-400 and
   64-2,048 tokens: seconds per step of each and the ratio padded / packed.
3. Memory. Peak memory of one sample's saliency at a few lengths, with and
   without ``gradient_checkpointing=True``, measured in a child process whose
   allocator returns freed buffers to the OS (benchmarks/memory.py); the slope
   in MiB per 1,000 tokens (least squares) of each and their ratio (goal <= 0.5).

    python benchmarks/bench_batching.py --json benchmarks/results/bench_batching_cpu.json
    python benchmarks/bench_batching.py --quick     # a smoke run
    python benchmarks/bench_batching.py --device cuda --packed-attention flex_attention --no-memory  # a GPU

``--attention`` is the attention implementation of the padded runs (default sdpa), ``--packed-attention``
that of the packed ones (default: the same); on a GPU, packing pays only with a kernel that skips the
other samples' tokens (flex_attention, flash_attention_2), which CPU training cannot use (flex attention
has no CPU backward in torch 2.13).
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

from leaf.batching import length_batches, pack, pad  # noqa: E402
from leaf.detect.saliency import embedding_saliency, pack_batch  # noqa: E402
from leaf.tiny import build_model, build_tokenizer  # noqa: E402


def _model(hidden: int, layers: int, max_len: int, device: str = "cpu", attention: str = "sdpa"):
    tok = build_tokenizer(style="llama3")
    model = build_model(tok, hidden_size=hidden, num_layers=layers, num_heads=4, max_position_embeddings=max_len,
                        attn_implementation=attention).to(device)
    model.requires_grad_(False)
    return model, len(tok)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _inputs(lengths: list[int], vocab: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(n)] for n in lengths]


def _score(model, seqs: list[list[int]], checkpointing: bool = False, packed: bool = False) -> None:
    targets = [list(range(len(s) - len(s) // 4, len(s))) for s in seqs]  # the response: the last quarter
    if packed:
        ids, mask, target, rows, _ = pack_batch(seqs, targets, 0)
        embedding_saliency(model, ids, mask, target, gradient_checkpointing=checkpointing, packed=rows)
        return
    ids, mask = pad(seqs, 0)
    target = torch.zeros_like(ids, dtype=torch.bool)
    for row, t in enumerate(targets):
        target[row, t] = True
    embedding_saliency(model, ids, mask, target, gradient_checkpointing=checkpointing)


def throughput(args) -> dict:
    model, vocab = _model(args.hidden, args.layers, 2048, args.device, args.attention)
    packed_model = model
    if args.packed_attention != args.attention:
        packed_model, _ = _model(args.hidden, args.layers, 2048, args.device, args.packed_attention)
        packed_model.load_state_dict(model.state_dict())
    lengths = [round(64 + (2048 - 64) * k / (args.samples - 1)) for k in range(args.samples)]
    random.Random(1).shuffle(lengths)
    seqs = _inputs(lengths, vocab)
    plans = {
        "fixed, input order": [list(range(i, min(i + args.batch_size, len(seqs)))) for i in range(0, len(seqs), args.batch_size)],
        "fixed": length_batches(lengths, args.batch_size),
        "max-tokens": length_batches(lengths, args.cap, args.max_tokens),
    }
    plans["packed"] = plans["max-tokens"]
    _score(model, [seqs[0][:64]])  # warm-up
    _score(packed_model, [seqs[0][:64], seqs[1][:64]], packed=True)
    out = {}
    for name, batches in plans.items():
        _sync(args.device)
        t0 = time.perf_counter()
        for b in batches:
            if name == "packed":
                _score(packed_model, [seqs[i] for i in b], packed=True)
            else:
                _score(model, [seqs[i] for i in b])
        _sync(args.device)
        dt = time.perf_counter() - t0
        padded = (sum(lengths) if name == "packed" else sum(max(lengths[i] for i in b) * len(b) for b in batches))
        out[name] = {"samples_per_s": round(len(seqs) / dt, 3), "seconds": round(dt, 2), "batches": len(batches),
                     "padded_tokens": padded, "real_tokens": sum(lengths)}
        print(f"{name:<20} {out[name]['samples_per_s']:8.3f} samples/s  {len(batches):3d} batches  "
              f"padding {padded / sum(lengths) - 1:6.1%}", flush=True)
    out["ratio_max_tokens_vs_fixed"] = round(out["max-tokens"]["samples_per_s"] / out["fixed"]["samples_per_s"], 3)
    out["ratio_packed_vs_fixed"] = round(out["packed"]["samples_per_s"] / out["fixed"]["samples_per_s"], 3)
    out["ratio_max_tokens_vs_fixed_input_order"] = round(
        out["max-tokens"]["samples_per_s"] / out["fixed, input order"]["samples_per_s"], 3)
    return out


def training_steps(args) -> dict:
    tok = build_tokenizer(style="llama3")
    models = {impl: build_model(tok, hidden_size=256, num_layers=4, num_heads=4, max_position_embeddings=4096,
                                attn_implementation=impl).to(args.device)
              for impl in {args.attention, args.packed_attention}}
    rng = random.Random(0)
    out = {}
    for lo, hi in ((100, 400), (64, 2048)):
        lengths = [rng.randint(lo, hi) for _ in range(8)]
        seqs = _inputs(lengths, len(tok), seed=lo)

        def padded():
            ids, m = (t.to(args.device) for t in pad(seqs, 0))
            out = models[args.attention](input_ids=ids, attention_mask=m, use_cache=False)
            return out.logits.float().logsumexp(-1)[m.bool()].sum()

        def packed():
            row = {k: v.to(args.device) for k, v in pack(seqs).items()}
            out = models[args.packed_attention](input_ids=row["input_ids"], position_ids=row["position_ids"],
                                                use_cache=False)
            return out.logits.float().logsumexp(-1).sum()

        res = {"padding": round(len(seqs) * max(lengths) / sum(lengths) - 1, 3)}
        for name, step in (("padded", padded), ("packed", packed)):
            step().backward()  # warm-up
            _sync(args.device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                for m in models.values():
                    m.zero_grad()
                step().backward()
            _sync(args.device)
            res[f"{name}_s_per_step"] = round((time.perf_counter() - t0) / args.steps, 3)
        res["ratio_packed_speed_vs_padded"] = round(res["padded_s_per_step"] / res["packed_s_per_step"], 3)
        out[f"{lo}-{hi}"] = res
        print(f"training step {lo}-{hi} tokens (padding {res['padding']:.1%}): padded {res['padded_s_per_step']} s, "
              f"packed {res['packed_s_per_step']} s, packed speed {res['ratio_packed_speed_vs_padded']}x", flush=True)
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
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per layout")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--attention", default="sdpa", help="attention implementation of the padded runs")
    ap.add_argument("--packed-attention", default=None, help="attention implementation of the packed runs "
                    "(default: --attention)")
    ap.add_argument("--no-memory", action="store_true", help="skip the CPU memory measurement")
    ap.add_argument("--dry-run", action="store_true", help="check the arguments, print the plan, run nothing")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.packed_attention = args.packed_attention or args.attention
    if args.dry_run:
        print(f"bench_batching: {args.samples} samples of 64-2,048 tokens on {args.device}, padded with "
              f"{args.attention}, packed with {args.packed_attention}; memory {'skipped' if args.no_memory else 'measured'}")
        return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.memory_child:
        print(json.dumps(memory_child(args)))
        return
    if args.quick:
        args.samples, args.lengths, args.steps = 12, [128, 256, 512], 1
    result = {
        "command": " ".join(["python", "benchmarks/bench_batching.py", *sys.argv[1:]]),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "memory_child")},
        "throughput": throughput(args),
        "training_steps": training_steps(args),
        "memory": None if args.no_memory else memory(args),
    }
    t, m = result["throughput"], result["memory"]
    result["goals"] = {"max_tokens_ratio >= 1.5": t["ratio_max_tokens_vs_fixed"] >= 1.5,
                       "packed_ratio >= 1.5": t["ratio_packed_vs_fixed"] >= 1.5}
    if m is not None:
        result["goals"]["checkpointed_slope_ratio <= 0.5"] = m["slope_ratio"] <= 0.5
    print(f"max-tokens / fixed: {t['ratio_max_tokens_vs_fixed']}x; packed / fixed: {t['ratio_packed_vs_fixed']}x; "
          f"checkpointed / plain memory slope: {m and m['slope_ratio']}x; goals {result['goals']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
