"""``leaf detect``: find the instruction tokens that mislead the student but not the teacher."""

from __future__ import annotations

import argparse

from leaf.config import add_config_arguments, resolve
from leaf.detect.run import DetectConfig

COMMAND = "detect"
HELP = "Stage 1: flag confounding tokens by comparing teacher and student gradient saliency"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, DetectConfig)


def run(args: argparse.Namespace) -> int:
    from leaf.detect.run import detect

    summary = detect(resolve(DetectConfig, args))
    print(summary.line())
    return 0
