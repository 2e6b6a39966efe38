"""``leaf tiny``: write a tiny random teacher/student pair to disk (no downloads).

For smoke runs and first contact: the models are random, so what they detect is
noise, but every stage runs on them through the real ``from_pretrained`` path.
"""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "tiny"
HELP = "write a tiny random teacher and student (shared tokenizer trained locally) for smoke runs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder; gets teacher/ and student/")
    parser.add_argument("--data", type=Path, default=None, help="JSONL samples to train the tokenizer on")
    parser.add_argument("--style", choices=["llama3", "chatml", "none"], default="llama3", help="chat template")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from leaf.data.records import load_samples
    from leaf.tiny import DEFAULT_CORPUS, build_model, build_tokenizer

    corpus = list(DEFAULT_CORPUS)
    if args.data:
        corpus += [t for s in load_samples(args.data) for t in (s.instruction, s.response)]
    tok = build_tokenizer(corpus, style=None if args.style == "none" else args.style, vocab_size=1024)
    for name, size, layers, seed in (("teacher", 64, 4, args.seed), ("student", 32, 2, args.seed + 1)):
        model = build_model(tok, hidden_size=size, num_layers=layers, seed=seed)
        out = args.out / name
        model.save_pretrained(out)
        tok.save_pretrained(out)
        print(f"wrote {out} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters)")
    return 0
