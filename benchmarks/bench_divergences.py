"""Time and peak memory of the fused head + loss (``chunked_head_kl``) for each divergence, vs forward KL.

Usage::

    python benchmarks/bench_divergences.py [--vocab 49152] [--positions 1024] [--hidden 512]
        [--repeats 3] [--threads 1] [--json OUT]

One forward + backward of ``leaf.distill.losses.chunked_head_kl`` on ``positions``
student hidden states through a plain ``(vocab, hidden)`` fp32 head weight
(the fused path: gradients w.r.t. hidden states and weight computed chunk by
chunk, no ``(N, V)`` logits), teacher given either as a function serving
precomputed fp32 logits a chunk at a time (``live``) or as a top-64 cache
(``topk``), T = 1, no cross-entropy. Time: median of ``--repeats`` passes after
one warm-up pass, in this process. Memory: peak RSS increase of one pass, in a
child process started under ``memory.EXACT_RSS_ENV`` (see benchmarks/memory.py;
nothing is timed there), over the inputs and the previous pass's weight gradient (freed and
allocated again inside the pass): the loss's working memory, i.e. the chunk buffers and the hidden-state gradient.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from memory import EXACT_RSS_ENV, PeakMemory, exact_rss_active  # noqa: E402

ARMS = [
    ("forward-kl", {}),
    ("reverse-kl", {}),
    ("jsd", {"beta": 0.5}),
    ("skew-forward-kl", {"alpha": 0.1}),
    ("skew-reverse-kl", {"alpha": 0.1}),
    ("tvd", {}),
]
TEACHERS = ("live", "topk")


def _setup(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    import torch

    from leaf.distill.losses import TopKTeacher

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.positions, args.hidden, generator=g)
    weight = (torch.randn(args.vocab, args.hidden, generator=g) / args.hidden**0.5).requires_grad_(True)
    t_logits = torch.randn(args.positions, args.vocab, generator=g) * 2
    top = torch.log_softmax(t_logits, -1).topk(64, dim=-1)
    teachers = {"live": lambda: (lambda sl: t_logits[sl]), "topk": lambda: TopKTeacher(top.values, top.indices)}
    w = torch.full((args.positions,), 1.0 / args.positions)
    return hidden, weight, teachers, w


def _pass(hidden, weight, teacher, w, div):  # type: ignore[no-untyped-def]
    from leaf.distill.losses import chunked_head_kl

    weight.grad = None
    h = hidden.clone().requires_grad_(True)
    parts = chunked_head_kl(h, weight, teacher, w, divergence=div)
    parts.loss.backward()
    return float(parts.loss.detach())


def _arms(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from leaf.distill.divergences import Divergence

    for teacher in args.teachers:
        for name, kw in ARMS:
            if name in args.divergences:
                yield teacher, Divergence(name, **kw)


def run_time(args: argparse.Namespace) -> list[dict]:
    hidden, weight, teachers, w = _setup(args)
    rows = []
    for teacher, div in _arms(args):
        loss = _pass(hidden, weight, teachers[teacher](), w, div)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            _pass(hidden, weight, teachers[teacher](), w, div)
            times.append(time.perf_counter() - t0)
        rows.append({"teacher": teacher, "divergence": div.describe(), "seconds": statistics.median(times),
                     "all_seconds": times, "loss": loss})
        print(f"{teacher:5s} {div.describe():28s} {statistics.median(times):7.3f} s  loss {loss:.4f}", flush=True)
    return rows


def run_memory(args: argparse.Namespace) -> list[dict]:
    assert exact_rss_active(), "run under EXACT_RSS_ENV"
    hidden, weight, teachers, w = _setup(args)
    _pass(hidden, weight, teachers["live"](), w, None)  # the weight gradient buffer's pages exist once
    rows = []
    for teacher, div in _arms(args):
        t = teachers[teacher]()
        with PeakMemory() as m:
            _pass(hidden, weight, t, w, div)
        rows.append({"teacher": teacher, "divergence": div.describe(), "peak_mib": m.peak_mib})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--positions", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--teachers", nargs="+", default=list(TEACHERS), choices=TEACHERS)
    ap.add_argument("--divergences", nargs="+", default=[a for a, _ in ARMS], choices=[a for a, _ in ARMS])
    ap.add_argument("--no-memory", action="store_true", help="skip the memory child")
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(run_memory(args)))
        return
    rows = run_time(args)
    if not args.no_memory:
        child = [sys.executable, __file__, "--memory-child", *sys.argv[1:]]
        out = subprocess.run(child, env={**os.environ, **EXACT_RSS_ENV}, check=True, stdout=subprocess.PIPE, text=True)
        mem = json.loads(out.stdout.strip().splitlines()[-1])
        for row, m in zip(rows, mem):
            row["peak_mib"] = m["peak_mib"]
    base = {r["teacher"]: r["seconds"] for r in rows if r["divergence"] == "forward-kl"}
    logits_mib = args.positions * args.vocab * 4 / 2**20
    print(f"\n{args.positions} positions x vocab {args.vocab} (fp32 logits {logits_mib:.0f} MiB), hidden {args.hidden}, "
          f"{args.threads} thread(s)")
    print("| teacher | divergence | s / pass | vs forward KL | peak MiB |")
    print("|---|---|---|---|---|")
    for r in rows:
        rel = r["seconds"] / base[r["teacher"]] if r["teacher"] in base else float("nan")
        print(f"| {r['teacher']} | {r['divergence']} | {r['seconds']:.2f} | {rel:.2f}x | {r.get('peak_mib', float('nan')):.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
