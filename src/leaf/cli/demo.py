"""``leaf demo``: the whole pipeline on tiny local models and a benchmark with known confounders."""

from __future__ import annotations

import argparse

from leaf.config import add_config_arguments, resolve
from leaf.demo.pipeline import DemoConfig

COMMAND = "demo"
HELP = "run the whole LeaF pipeline on tiny local models and synthetic tasks with known confounders"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, DemoConfig)


def run(args: argparse.Namespace) -> int:
    import logging

    from leaf.demo.pipeline import demo

    logging.getLogger("leaf.demo").setLevel(logging.INFO)
    cfg = resolve(DemoConfig, args)
    results = demo(cfg)
    out = cfg.out
    print((out / "table.md").read_text())
    print(f"results: {out / 'results.json'}; report: {out / 'report.html'}; "
          f"took {results['timings']['total']:.0f} s")
    return 0
