"""``leaf demo``: the whole pipeline on tiny local models and a benchmark with known confounders."""

from leaf.cli import Command

COMMAND = Command(
    "demo",
    "run the whole LeaF pipeline on tiny local models and synthetic tasks with known confounders",
    config="leaf.demo.config:DemoConfig",
    run="leaf.demo:demo",
)
