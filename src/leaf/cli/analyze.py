"""``leaf analyze``: share of attention that response tokens put on flagged spans, per model and layer."""

from __future__ import annotations

import argparse
import sys

from leaf.config import add_config_arguments

COMMAND = "analyze"
HELP = "attention of response tokens on flagged spans vs the rest of the instruction, per model and layer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from leaf.analyze.run import AnalyzeConfig

    add_config_arguments(parser, AnalyzeConfig)


def run(args: argparse.Namespace) -> int:
    from leaf.analyze.run import RESULT_FILE, AnalyzeConfig, analyze
    from leaf.config import resolve

    from leaf.data.jsonl import SettingsMismatch

    config = resolve(AnalyzeConfig, args)
    try:
        result = analyze(config)
    except SettingsMismatch as exc:
        print(f"leaf analyze: error: {exc}", file=sys.stderr)
        return 2
    for m in result["models"]:
        s = m["summary"]
        share = "n/a" if s["share_on_span"] is None else f"{s['share_on_span']:.4f}"
        ratio = "n/a" if s["span_density_ratio"] is None else f"{s['span_density_ratio']:.3f}"
        skipped = sum(s["skipped"].values())
        print(
            f"{m['label']}: {s['samples']} samples ({skipped} skipped), mean share on spans {share}, "
            f"per-token ratio span/rest {ratio}"
        )
    print(f"wrote {config.out / RESULT_FILE}")
    return 0
