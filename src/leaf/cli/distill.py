"""``leaf distill``: teacher -> student distillation on original (+ counterfactual) samples.

``--lambda 1`` or no ``--counterfactuals`` is plain KD (the "KD w/o mask"
baseline), through the same code. Run it under ``accelerate launch`` for
several GPUs (configs/accelerate/*.yaml).
"""

from leaf.cli import Command

COMMAND = Command(
    "distill",
    "distil a teacher into a student on original and counterfactual samples (LeaF Stage 2)",
    config="leaf.distill.config:DistillConfig",
    run="leaf.distill:distill",
)
