"""``leaf evaluate``: generate on benchmarks and score, score given predictions, or compare runs."""

from __future__ import annotations

import argparse
import sys

COMMAND = "evaluate"
HELP = "evaluate a model on benchmarks (math, code, multi-hop QA), score predictions, or compare results files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from leaf.config import add_config_arguments
    from leaf.evaluate.run import EvaluateConfig

    add_config_arguments(parser, EvaluateConfig)


def run(args: argparse.Namespace) -> int:
    from leaf.config import resolve
    from leaf.data.jsonl import SettingsMismatch
    from leaf.evaluate.run import EvaluateConfig, compare_table, evaluate, summary_table

    cfg = resolve(EvaluateConfig, args)
    if cfg.compare:
        print(compare_table(cfg.compare))
        return 0
    try:
        results = evaluate(cfg)
    except SettingsMismatch as exc:
        print(f"leaf {COMMAND}: error: {exc}", file=sys.stderr)
        return 2
    print(summary_table(results))
    print(f"wrote {cfg.out}")
    return 0
