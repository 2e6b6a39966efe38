"""``leaf analyze``: share of attention that response tokens put on flagged spans, per model and layer."""

from leaf.cli import Command

COMMAND = Command(
    "analyze",
    "attention of response tokens on flagged spans vs the rest of the instruction, per model and layer",
    config="leaf.analyze.config:AnalyzeConfig",
    run="leaf.analyze:analyze",
)
