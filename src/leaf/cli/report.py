"""``leaf report``: one static HTML page of a run folder."""

from __future__ import annotations

import argparse
import sys

from leaf.config import add_config_arguments

COMMAND = "report"
HELP = "build one static HTML page (no server, no external assets) of a run folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from leaf.report import ReportConfig

    add_config_arguments(parser, ReportConfig)


def run(args: argparse.Namespace) -> int:
    from leaf.config import resolve
    from leaf.report import ReportConfig, write_report

    config = resolve(ReportConfig, args)
    if not config.run.is_dir():
        print(f"leaf report: error: {config.run}: run folder not found", file=sys.stderr)
        return 2
    out, shown = write_report(config)
    line = f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)"
    if shown.missing:
        line += f"; not in this run: {', '.join(shown.missing)}"
    if shown.errors:
        line += f"; {len(shown.errors)} problem(s) reading the run, listed on the page"
    print(line)
    return 0
