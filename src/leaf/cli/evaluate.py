"""``leaf evaluate``: generate on benchmarks and score, score given predictions, or compare runs."""

from leaf.cli import Command

COMMAND = Command(
    "evaluate",
    "evaluate a model on benchmarks (math, code, multi-hop QA), score predictions, or compare results files",
    config="leaf.evaluate.config:EvaluateConfig",
    run="leaf.evaluate:evaluate",
)
