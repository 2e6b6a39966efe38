"""``leaf detect``: find the instruction tokens that mislead the student but not the teacher."""

from leaf.cli import Command

COMMAND = Command(
    "detect",
    "Stage 1: flag confounding tokens by comparing teacher and student gradient saliency",
    config="leaf.detect.config:DetectConfig",
    run="leaf.detect:detect",
)
