"""A small quality comparison of the divergences: one short distillation per ``--divergence`` on tiny models.

Usage::

    python benchmarks/compare_divergences.py [--steps 40] [--root /tmp/leaf-divergences] [--json OUT]

A toy, not evidence about real models: a LLaMA-architecture teacher (hidden 64,
2 layers, output layer scaled by ``--teacher-scale`` (default 8) so its
distributions are peaked, as a trained LM's are) and a smaller student (hidden 32, 1 layer), the tiny
tokenizer of ``leaf.tiny``, 96 training and 24 held-out samples cut from its
corpus. Each arm trains the same student from the same initial weights for
``--steps`` optimiser steps (batch 8, lr 3e-3, T = 1, originals only,
lambda 1), then measures on the held-out response tokens, against the
teacher: mean forward KL(p || q), reverse KL(q || p), total variation, and
top-1 agreement (the student's argmax is the teacher's), computed here from
both models' logits, independently of the training loss.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ARMS = [
    ("forward-kl", {}),
    ("reverse-kl", {}),
    ("jsd", {"divergence_beta": 0.5}),
    ("skew-forward-kl", {"divergence_alpha": 0.1}),
    ("skew-reverse-kl", {"divergence_alpha": 0.1}),
    ("tvd", {}),
]


def _setup(root: Path, scale: float) -> None:
    import torch

    from leaf.tiny import DEFAULT_CORPUS, build_model, build_tokenizer

    root.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(style="llama3")
    for name, hidden, layers, seed in (("teacher", 64, 2, 0), ("student", 32, 1, 1)):
        model = build_model(tok, hidden_size=hidden, num_layers=layers, seed=seed)
        if name == "teacher":
            with torch.no_grad():
                model.lm_head.weight.mul_(scale)
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    rng = random.Random(0)
    words = " ".join(DEFAULT_CORPUS).split()

    def text(n: int) -> str:
        start = rng.randrange(0, len(words) - n)
        return " ".join(words[start : start + n])

    for name, count in (("train.jsonl", 96), ("heldout.jsonl", 24)):
        with (root / name).open("w") as fh:
            for i in range(count):
                fh.write(json.dumps({"id": f"{name[:1]}{i}", "instruction": text(8), "response": text(12)}) + "\n")


def _measure(root: Path, student_dir: Path) -> dict[str, float]:
    import torch

    from leaf.distill.data import load_examples
    from leaf.models import load_model, load_tokenizer

    tok = load_tokenizer(str(root / "student"))
    teacher = load_model(str(root / "teacher")).eval()
    student = load_model(str(student_dir)).eval()
    sums = {"forward_kl": 0.0, "reverse_kl": 0.0, "tvd": 0.0, "top1_agreement": 0.0}
    n = 0
    with torch.no_grad():
        for ex in load_examples(tok, root / "heldout.jsonl"):
            ids = torch.tensor([ex.input_ids])
            labels = torch.tensor(ex.labels)
            pos = (labels[1:] != -100).nonzero().squeeze(1)  # positions predicting a loss token
            lp = torch.log_softmax(teacher(input_ids=ids).logits[0, pos].double(), -1)
            lq = torch.log_softmax(student(input_ids=ids).logits[0, pos].double(), -1)
            p, q = lp.exp(), lq.exp()
            sums["forward_kl"] += float((p * (lp - lq)).sum())
            sums["reverse_kl"] += float((q * (lq - lp)).sum())
            sums["tvd"] += float(0.5 * (p - q).abs().sum())
            sums["top1_agreement"] += float((lp.argmax(-1) == lq.argmax(-1)).sum())
            n += len(pos)
    return {k: v / n for k, v in sums.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--root", type=Path, default=Path("/tmp/leaf-divergences"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--teacher-scale", type=float, default=8.0, help="factor on the teacher's output layer (sharper)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import torch

    from leaf.distill import distill

    torch.set_num_threads(args.threads)
    _setup(args.root, args.teacher_scale)
    rows = [{"divergence": "(untrained student)", **_measure(args.root, args.root / "student")}]
    for name, kw in ARMS:
        out = args.root / f"run-{name}"
        t0 = time.perf_counter()
        distill(student=str(args.root / "student"), teacher=str(args.root / "teacher"), data=args.root / "train.jsonl",
                out=out, overwrite=True, lam=1.0, max_steps=args.steps, batch_size=8, grad_accum=1,
                learning_rate=3e-3, warmup_steps=0, save_steps=10**6, precision="fp32", device="cpu",
                divergence=name, **kw)
        label = name + "".join(f" {k.split('_')[-1]} {v:g}" for k, v in kw.items())
        rows.append({"divergence": label, "train_seconds": time.perf_counter() - t0, **_measure(args.root, out)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"\n{args.steps} steps each; held-out response tokens, student vs teacher (lower is closer; agreement higher)")
    print("| trained with | forward KL | reverse KL | TVD | top-1 agreement |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['divergence']} | {r['forward_kl']:.3f} | {r['reverse_kl']:.3f} | {r['tvd']:.3f} | "
              f"{100 * r['top1_agreement']:.1f} % |")
    if args.json:
        args.json.write_text(json.dumps({"steps": args.steps, "teacher_scale": args.teacher_scale, "rows": rows},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
