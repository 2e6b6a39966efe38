"""Throughput and peak memory of leaf's distiller vs TRL's GKDTrainer (forward KL), on tiny models.

Usage::

    python benchmarks/bench_distill.py [--steps 6] [--batch 4] [--threads 1] [--out bench.json]
    python benchmarks/bench_distill.py --model smollm2-135m-instruct   # real weights (49k vocabulary) as both

One process trains at a time (no data parallelism). Each measurement runs in
a fresh child process so that its peak memory (``ru_maxrss``: peak resident
set size, exact) is its own. Models: LLaMA-architecture teacher (hidden 256,
4 layers) and student (hidden 128, 2 layers), both with a 32,768-row output
layer (a small trained tokenizer plus padded embedding rows), so the
full-vocabulary loss weighs as it does for real models.

Arms (same data, batch size, steps, fp32, CPU):

* ``leaf-live``   -- ``DistillTrainer`` with the live teacher;
* ``leaf-cache``  -- ``DistillTrainer`` from a top-64 teacher cache (built first, not timed);
* ``trl-gkd``     -- ``trl.experimental.gkd.GKDTrainer`` with ``beta=0`` (forward
  KL(teacher || student)), ``lmbda=0`` (no student generations), ``seq_kd=False``, T = 1;
* ``loss-chunked`` / ``loss-unchunked`` / ``loss-autograd`` -- the loss alone,
  forward + backward, on ``(4, 1024, 32768)`` fp32 logits (chunk 1024 / one chunk / plain
  autograd ``log_softmax`` KL as most hand-written loops do).

Throughput: tokens (non-padding, student input) per second over the timed
steps (the first step is warm-up and not timed). Memory: peak RSS of the
child, and the increase over its RSS just before training started.

On a GPU: ``--precision bf16`` (bf16 autocast, float32 master weights, the
teacher in bf16; SDPA attention) with the leaf arms (``--arms leaf-live
leaf-cache``); the trainer takes the GPU by itself. Each result then also
holds ``cuda_peak_mib`` (``torch.cuda.max_memory_allocated`` during training)
and the student's / teacher's parameter counts, from which ``achieved_tflops``
= tokens/s x (6 N_student + 2 N_teacher, live arm only). ``--student-size`` /
``--teacher-size HIDDEN:LAYERS`` make the models bigger (a new --root).
``--dry-run`` checks the arguments and prints the plan.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VOCAB = 32768
WORDS = (
    "the a of to and in is that for on with as by at from it this be are was an or which not have has "
    "number apples sum result answer step first then add multiply total each value key hint ignore "
    "compute check read question function return input output list string integer because therefore"
).split()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def setup(root: Path, n: int, seed: int = 0, sizes: tuple[tuple[int, int], tuple[int, int]] = ((256, 4), (128, 2))) -> None:
    """Tokenizer, teacher, student (vocab padded to 32k) and n samples with ~250-token responses."""
    import torch

    from leaf.tiny import DEFAULT_CORPUS, build_model, build_tokenizer

    rng = random.Random(seed)
    text = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    samples = [{"id": i, "instruction": text(60) + "?", "response": text(220) + "."} for i in range(n)]
    tok = build_tokenizer(DEFAULT_CORPUS + [s["response"] for s in samples[:50]], style="llama3", vocab_size=2000)
    (t_hidden, t_layers), (s_hidden, s_layers) = sizes
    for name, hidden, layers, s in (("teacher", t_hidden, t_layers, 0), ("student", s_hidden, s_layers, 1)):
        # head_dim 64 from 256 up (flash-attention sizes); the default shapes keep their 4 heads
        model = build_model(tok, hidden_size=hidden, num_layers=layers, seed=s, num_heads=max(4, hidden // 64))
        model.resize_token_embeddings(VOCAB, mean_resizing=False)
        with torch.no_grad():  # a peaked teacher, like a trained LM (so top-k captures most mass)
            if name == "teacher":
                model.lm_head.weight.mul_(30.0)
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    with (root / "data.jsonl").open("w") as fh:
        fh.writelines(json.dumps(s) + "\n" for s in samples)


def setup_real(root: Path, model: Path, n: int, seed: int = 0) -> None:
    """A real checkpoint (scripts/fetch_models.sh) as both teacher and student (linked, not copied), and n
    samples of the same words; the loss arms take its vocabulary."""
    rng = random.Random(seed)
    text = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    root.mkdir(parents=True, exist_ok=True)
    for name in ("teacher", "student"):
        (root / name).symlink_to(model.resolve(), target_is_directory=True)
    with (root / "data.jsonl").open("w") as fh:
        fh.writelines(json.dumps({"id": i, "instruction": text(60) + "?", "response": text(220) + "."}) + "\n"
                      for i in range(n))


def _vocab(root: Path | None) -> int:
    """The output layer's rows: the real model's where --model gave one, else :data:`VOCAB`."""
    config = root / "student" / "config.json" if root is not None else None
    if config is not None and (root / "student").is_symlink() and config.is_file():
        c = json.loads(config.read_text())
        return int(c.get("text_config", c)["vocab_size"])
    return VOCAB


class _Timer:
    """TrainerCallback-like: time and tokens of steps 2..N."""

    def __init__(self) -> None:
        self.t: list[float] = []
        self.tokens: list[int] = []


def _timer_callback(timer: _Timer):
    from transformers import TrainerCallback

    class TimeSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            timer.t.append(time.perf_counter())

    return TimeSteps()


def run_leaf(root: Path, steps: int, batch: int, cache: bool, precision: str = "fp32", chunked_head: str = "auto") -> dict:
    from leaf.distill.config import DistillConfig
    from leaf.distill.run import build_trainer

    out = Path(tempfile.mkdtemp())
    cfg = DistillConfig(
        student=str(root / "student"), teacher=None if cache else str(root / "teacher"),
        teacher_cache=(root / "cache") if cache else None, data=root / "data.jsonl", out=out,
        batch_size=batch, grad_accum=1, max_steps=steps, save_steps=10**6, warmup_steps=0,
        precision=precision, logging_steps=10**6, kl_chunk_size=1024, chunked_head=chunked_head,
    )
    timer = _Timer()
    trainer = build_trainer(cfg, callbacks=[_timer_callback(timer)])
    return _train(trainer, timer, steps, batch)


def _tokens_per_sample(trainer, n: int) -> float:
    ds = trainer.train_dataset
    lens = [len(ds[i]["input_ids"]) for i in range(min(len(ds), n))]
    return sum(lens) / len(lens)


def _train(trainer, timer: _Timer, steps: int, batch: int) -> dict:
    import torch

    base = _current_rss_mb()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    dt = timer.t[-1] - timer.t[0]
    tps = _tokens_per_sample(trainer, 10**6)
    samples = (steps - 1) * batch
    n_student = sum(p.numel() for p in trainer.model.parameters())
    teacher = getattr(trainer, "teacher", None)
    n_teacher = sum(p.numel() for p in teacher.parameters()) if teacher is not None else 0
    flops_per_token = 6 * n_student + 2 * n_teacher
    return {
        "student_params": n_student,
        "teacher_params": n_teacher,
        "achieved_tflops": samples * tps / dt * flops_per_token / 1e12,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "samples_per_s": samples / dt,
        "tokens_per_s": samples * tps / dt,
        "mean_tokens_per_sample": tps,
        "peak_rss_mb": _rss_mb(),
        "rss_before_train_mb": base,
        "train_peak_increase_mb": _rss_mb() - base,
        "threads": torch.get_num_threads(),
    }


def run_trl(root: Path, steps: int, batch: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    tok = AutoTokenizer.from_pretrained(root / "student")
    rows = [json.loads(x) for x in (root / "data.jsonl").read_text().splitlines()]
    ds = Dataset.from_list([{"messages": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["response"]}]} for r in rows])
    args = GKDConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch, gradient_accumulation_steps=1, max_steps=steps,
        learning_rate=1e-5, lr_scheduler_type="cosine", warmup_steps=0, lmbda=0.0, beta=0.0, temperature=1.0, seq_kd=False,
        max_length=4096, report_to="none", save_strategy="no", logging_steps=10**6, use_cpu=True, bf16=False,
        seed=42, optim="adamw_torch", max_grad_norm=1.0,
    )
    student = AutoModelForCausalLM.from_pretrained(root / "student", dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(root / "teacher", dtype=torch.float32)
    timer = _Timer()
    trainer = GKDTrainer(model=student, teacher_model=teacher, args=args, train_dataset=ds, processing_class=tok, callbacks=[_timer_callback(timer)])
    base = _current_rss_mb()
    trainer.train()
    dt = timer.t[-1] - timer.t[0]
    # the same rendered text as leaf's examples (same chat template): count tokens with leaf's encoding
    from leaf.distill.data import load_examples

    exs = load_examples(tok, root / "data.jsonl")
    tps = sum(len(e.input_ids) for e in exs) / len(exs)
    samples = (steps - 1) * batch
    return {
        "samples_per_s": samples / dt, "tokens_per_s": samples * tps / dt, "mean_tokens_per_sample": tps,
        "peak_rss_mb": _rss_mb(), "rss_before_train_mb": base, "train_peak_increase_mb": _rss_mb() - base,
        "threads": torch.get_num_threads(),
    }


def run_loss(mode: str, tokens: int = 4096, rows: int = 4, vocab: int = VOCAB) -> dict:
    """Forward + backward of the KL alone on (rows, tokens/rows, V) fp32 logits (every position a loss token)."""
    import torch

    from leaf.distill.losses import DenseTeacher, distill_loss, forward_kl

    g = torch.Generator().manual_seed(0)
    L = tokens // rows
    student = torch.randn(rows, L, vocab, generator=g).requires_grad_(True)
    teacher = torch.randn(rows, L, vocab, generator=g)
    r = torch.arange(rows * L)
    w = torch.full((rows * L,), 1.0 / (rows * L))
    base = _current_rss_mb()
    t0 = time.perf_counter()
    if mode == "autograd":
        loss = (forward_kl(teacher, student).reshape(-1) * w).sum()
    else:
        loss = distill_loss(student, r, DenseTeacher(teacher.view(rows * L, vocab), r), w, chunk_size=1024 if mode == "chunked" else None).loss
    loss.backward()
    dt = time.perf_counter() - t0
    return {"loss": loss.item(), "seconds": dt, "peak_increase_mb": _rss_mb() - base, "logits_mb": student.numel() * 4 / 2**20}


def child(arm: str, root: Path, steps: int, batch: int, precision: str = "fp32", chunked_head: str = "auto") -> dict:
    if arm == "leaf-live":
        return run_leaf(root, steps, batch, cache=False, precision=precision, chunked_head=chunked_head)
    if arm == "leaf-cache":
        return run_leaf(root, steps, batch, cache=True, precision=precision, chunked_head=chunked_head)
    if arm == "trl-gkd":
        return run_trl(root, steps, batch)
    if arm.startswith("loss-"):
        return run_loss(arm.split("-", 1)[1], vocab=_vocab(root))
    raise ValueError(arm)


def _size(text: str) -> tuple[int, int]:
    try:
        hidden, layers = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use HIDDEN:LAYERS, e.g. 1024:8") from None
    return hidden, layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="runs per arm; the best throughput is kept")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--root", type=Path, default=None, help="reuse a folder made by an earlier run")
    ap.add_argument("--arms", nargs="+", default=["loss-chunked", "loss-unchunked", "loss-autograd", "leaf-live", "leaf-cache", "trl-gkd"])
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="leaf arms: fp32, or bf16 autocast (GPU)")
    ap.add_argument("--student-size", type=_size, default=(128, 2), metavar="HIDDEN:LAYERS", help="student shape (default 128:2)")
    ap.add_argument("--teacher-size", type=_size, default=(256, 4), metavar="HIDDEN:LAYERS", help="teacher shape (default 256:4)")
    ap.add_argument("--model", default=None, metavar="NAME",
                    help="a real checkpoint as teacher and student: a folder of LEAF_MODELS (scripts/fetch_models.sh), "
                         "e.g. smollm2-135m-instruct, or a path (a new --root)")
    ap.add_argument("--dry-run", action="store_true", help="check the arguments, print the plan, run nothing")
    ap.add_argument("--chunked-head", default="auto", choices=["auto", "always", "never"],
                    help="leaf arms: DistillConfig.chunked_head (default auto: full logits at this 32k vocabulary)")
    args = ap.parse_args()
    known = {"loss-chunked", "loss-unchunked", "loss-autograd", "leaf-live", "leaf-cache", "trl-gkd"}
    if set(args.arms) - known:
        ap.error(f"unknown arms {sorted(set(args.arms) - known)}; use {sorted(known)}")
    if args.dry_run:
        print(f"bench_distill: arms {' '.join(args.arms)}, precision {args.precision}, student {args.student_size}, "
              f"teacher {args.teacher_size} (hidden, layers), {args.samples} samples, batch {args.batch}, {args.steps} steps, "
              f"chunked head {args.chunked_head}, model {args.model or 'tiny'}, "
              f"out {args.out}")
        return
    import torch

    torch.set_num_threads(args.threads)
    if args._child:
        print("RESULT " + json.dumps(child(args._child, args.root, args.steps, args.batch, args.precision, args.chunked_head)))
        return

    root = args.root or Path(tempfile.mkdtemp(prefix="leaf-bench-"))
    if not (root / "data.jsonl").exists() and args.model:
        from leaf.gguf import fetched_models

        models = fetched_models()
        model = Path(args.model) if Path(args.model).is_dir() else models / args.model
        if not (model / "config.json").is_file():
            ap.error(f"--model {args.model}: no model folder {model} (run scripts/fetch_models.sh)")
        setup_real(root, model, args.samples)
    elif not (root / "data.jsonl").exists():
        setup(root, args.samples, sizes=(args.teacher_size, args.student_size))
    if "leaf-cache" in args.arms and not (root / "cache" / "manifest.json").exists():
        from leaf.distill.cache import CacheConfig, build_cache

        t0 = time.perf_counter()
        build_cache(CacheConfig(teacher=str(root / "teacher"), data=root / "data.jsonl", out=root / "cache", top_k=64, batch_size=args.batch))
        print(f"cache built in {time.perf_counter() - t0:.1f}s")
    results: dict[str, dict] = {}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    for arm in args.arms:
        best = None
        for _ in range(1 if arm.startswith("loss-") else args.repeats):
            cmd = [sys.executable, __file__, "--_child", arm, "--root", str(root), "--steps", str(args.steps), "--batch", str(args.batch), "--threads", str(args.threads), "--precision", args.precision, "--chunked-head", args.chunked_head]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                results[arm] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
                break
            r = json.loads(line[0][7:])
            if best is None or r.get("tokens_per_s", 0) > best.get("tokens_per_s", 0):
                best = r
        if best is not None:
            results[arm] = best
        print(arm, json.dumps(results[arm]))
    summary = {}
    if all("tokens_per_s" in results.get(a, {}) for a in ("leaf-live", "trl-gkd")):
        summary["live_vs_trl_throughput"] = results["leaf-live"]["tokens_per_s"] / results["trl-gkd"]["tokens_per_s"]
        summary["live_vs_trl_peak_rss"] = results["leaf-live"]["peak_rss_mb"] / results["trl-gkd"]["peak_rss_mb"]
        summary["live_vs_trl_train_increase"] = results["leaf-live"]["train_peak_increase_mb"] / results["trl-gkd"]["train_peak_increase_mb"]
    if all("tokens_per_s" in results.get(a, {}) for a in ("leaf-cache", "trl-gkd")):
        summary["cache_vs_trl_throughput"] = results["leaf-cache"]["tokens_per_s"] / results["trl-gkd"]["tokens_per_s"]
    if all("peak_increase_mb" in results.get(a, {}) for a in ("loss-chunked", "loss-unchunked")):
        summary["chunked_vs_unchunked_peak"] = results["loss-chunked"]["peak_increase_mb"] / results["loss-unchunked"]["peak_increase_mb"]
    if all("peak_increase_mb" in results.get(a, {}) for a in ("loss-chunked", "loss-autograd")):
        summary["chunked_vs_autograd_peak"] = results["loss-chunked"]["peak_increase_mb"] / results["loss-autograd"]["peak_increase_mb"]
    print("summary", json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
