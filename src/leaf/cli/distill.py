"""``leaf distill``: teacher -> student distillation on original (+ counterfactual) samples.

``--lambda 1`` or no ``--counterfactuals`` is plain KD (the "KD w/o mask"
baseline), through the same code. Run it under ``accelerate launch`` for
several GPUs (configs/accelerate/*.yaml).
"""

from __future__ import annotations

import argparse

from leaf.config import add_config_arguments, resolve

COMMAND = "distill"
HELP = "distil a teacher into a student on original and counterfactual samples (LeaF Stage 2)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from leaf.distill.config import DistillConfig

    add_config_arguments(parser, DistillConfig)


def run(args: argparse.Namespace) -> int:
    from leaf.distill import DistillConfig, distill

    config = resolve(DistillConfig, args)
    out = distill(config)
    print(f"wrote {out}")
    return 0
