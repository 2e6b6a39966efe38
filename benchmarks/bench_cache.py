"""Teacher cache at corpus scale: bytes per token, and peak memory of writing and reading 10^3-10^5 samples.

``leaf cache-teacher`` writes the teacher's top-k log-probs shard by shard
(``--shard-size`` examples each) and training reads them back a slice at a
time (:class:`leaf.distill.cache.TeacherCache`), so the cache itself should
never need memory in proportion to the corpus. This benchmark builds caches of
N short samples (arithmetic problems of about 40 tokens with the chat
template; the ``leaf tiny`` teacher: 4 layers, width 64, vocabulary 512) for
several N, each in a fresh process, and reports per N:

* ``write``: seconds and peak RSS of the whole ``build_cache`` call, and
  (in another process) the RSS of the tokenized examples alone: every stage
  holds those, the cache's share is the rest;
* ``read``: peak RSS of opening the cache and reading every example's rows
  (what training does over one epoch), and of the index alone.

Every figure is MiB above the RSS once torch, transformers and leaf are
imported; peaks are ``ru_maxrss`` of the process.

Also: bytes per cached token on disk, against DistillKit's recommended setting
of about 300 bytes per token.

    python benchmarks/bench_cache.py --json benchmarks/results/bench_cache_cpu.json
    python benchmarks/bench_cache.py --sizes 1000 10000 --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from memory import rss_bytes  # noqa: E402

#: DistillKit's recommended offline setting, in bytes per token (the figure compared against).
DISTILLKIT_BYTES_PER_TOKEN = 300


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def write_samples(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            fh.write(json.dumps({"id": f"p{i}", "instruction": f"Sam has {a} apples and gets {b} more. How many?",
                                 "response": f"{a} + {b} = {a + b}. #### {a + b}"}) + "\n")


def _imported() -> int:
    """RSS once the libraries every child uses are imported (the baseline of its figures)."""
    import safetensors.torch  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import leaf.distill  # noqa: F401
    import leaf.distill.cache  # noqa: F401
    import leaf.distill.data  # noqa: F401

    return rss_bytes()


def child_examples(teacher: str, data: str) -> dict:
    from leaf.distill.data import load_examples
    from leaf.models import load_tokenizer

    tokenizer = load_tokenizer(teacher)
    base = _imported()
    examples = load_examples(tokenizer, data, None)  # what every stage holds: the tokenized examples
    return {"examples_mib": (rss_bytes() - base) / 2**20, "examples": len(examples)}


def child_write(teacher: str, data: str, out: str, k: int, store_dtype: str, shard_size: int) -> dict:
    from leaf.distill import build_cache

    base = _imported()
    t0 = time.perf_counter()
    summary = build_cache(teacher=teacher, data=data, out=out, top_k=k, store_dtype=store_dtype,
                          shard_size=shard_size, batch_size=64, device="cpu")
    return {"seconds": time.perf_counter() - t0, "peak_mib": _peak_mib() - base / 2**20,
            "tokens": summary.tokens, "bytes_per_token": summary.bytes_per_token}


def child_read(out: str) -> dict:
    from leaf.distill.cache import TeacherCache

    base = _imported()
    cache = TeacherCache.open(out)
    index_mib = (rss_bytes() - base) / 2**20
    t0, rows = time.perf_counter(), 0
    for key in cache.index:
        lp, ids = cache.get(key)
        rows += int(lp.shape[0] + 0 * ids.shape[0])
    return {"seconds": time.perf_counter() - t0, "peak_mib": _peak_mib() - base / 2**20, "index_mib": index_mib,
            "rows": rows}


def _run_child(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--store-dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--shard-size", type=int, default=2_000)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, rest = args.child[0], args.child[1:]
        if kind == "write":
            result = child_write(rest[0], rest[1], rest[2], int(rest[3]), rest[4], int(rest[5]))
        elif kind == "examples":
            result = child_examples(rest[0], rest[1])
        else:
            result = child_read(rest[0])
        print(json.dumps(result))
        return

    from leaf.tiny import write_tiny

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tiny(out=root / "models")
        teacher = str(root / "models" / "teacher")
        for n in args.sizes:
            data, out = root / f"samples-{n}.jsonl", root / f"cache-{n}"
            write_samples(data, n)
            w = _run_child("write", teacher, str(data), str(out), str(args.top_k), args.store_dtype,
                           str(args.shard_size))
            r = _run_child("read", str(out))
            w.update(_run_child("examples", teacher, str(data)))
            rows.append({"samples": n, "write": w, "read": r})
            print(f"{n:>7} samples, {w['tokens']:>9} tokens: write {w['seconds']:7.1f} s, peak {w['peak_mib']:7.1f} "
                  f"MiB (tokenized examples {w['examples_mib']:6.1f} MiB); read peak {r['peak_mib']:7.1f} MiB "
                  f"(index {r['index_mib']:5.1f} MiB), {r['seconds']:5.1f} s; {w['bytes_per_token']:.0f} bytes/token "
                  f"(DistillKit's setting ~{DISTILLKIT_BYTES_PER_TOKEN})", flush=True)
    first, last = rows[0], rows[-1]
    growth = {side: (last[side]["peak_mib"] - first[side]["peak_mib"]) / (last["samples"] - first["samples"]) * 1e4
              for side in ("write", "read")}
    print(f"peak growth per 10^4 samples: write {growth['write']:.1f} MiB, read {growth['read']:.1f} MiB; "
          f"tokenized examples {(last['write']['examples_mib'] - first['write']['examples_mib']) / (last['samples'] - first['samples']) * 1e4:.1f} MiB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                         "threads": os.environ.get("OMP_NUM_THREADS"), "top_k": args.top_k,
                                         "store_dtype": args.store_dtype, "shard_size": args.shard_size,
                                         "rows": rows, "growth_mib_per_1e4": growth}, indent=2) + "\n")


if __name__ == "__main__":
    main()
