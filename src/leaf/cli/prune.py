"""``leaf prune``: build counterfactual samples from detections."""

from leaf.cli import Command

COMMAND = Command(
    "prune",
    "build counterfactual samples from detections: delete (span or collective), mask or resample the confounders",
    config="leaf.prune.config:PruneConfig",
    run="leaf.prune:prune",
)
