"""``leaf prune``: build counterfactual samples from detections."""

from __future__ import annotations

import argparse

from leaf.config import add_config_arguments, resolve
from leaf.prune.run import PruneConfig

COMMAND = "prune"
HELP = "build counterfactual samples from detections: delete (span or collective), mask or resample the confounders"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, PruneConfig)


def run(args: argparse.Namespace) -> int:
    from leaf.prune.run import prune

    cfg = resolve(PruneConfig, args)
    summary = prune(cfg)
    print(summary.line())
    if summary.top_pruned:
        print("most pruned: " + ", ".join(f"{text!r} x{n}" for text, n in summary.top_pruned[:10]))
    return 0
