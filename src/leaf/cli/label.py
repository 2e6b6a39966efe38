"""``leaf label``: fill teacher_correct / student_correct (and the generations) for each sample."""

from __future__ import annotations

import argparse
import sys

COMMAND = "label"
HELP = "generate with teacher and student, check the answers, and write teacher_correct/student_correct"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from leaf.config import add_config_arguments
    from leaf.evaluate.label import LabelConfig

    add_config_arguments(parser, LabelConfig)


def run(args: argparse.Namespace) -> int:
    from leaf.config import resolve
    from leaf.data.jsonl import SettingsMismatch
    from leaf.evaluate.label import LabelConfig, label

    cfg = resolve(LabelConfig, args)
    try:
        rows = label(cfg)
    except SettingsMismatch as exc:
        print(f"leaf {COMMAND}: error: {exc}", file=sys.stderr)
        return 2
    n = len(rows)
    t = sum(r["teacher_correct"] for r in rows)
    s = sum(r["student_correct"] for r in rows)
    sw = sum(r["teacher_correct"] and not r["student_correct"] for r in rows)
    print(f"teacher right {t}/{n}, student right {s}/{n}, teacher right and student wrong {sw}")
    print(f"wrote {cfg.out}")
    return 0
