"""``leaf report``: one static HTML page of a run folder (detections, training, evaluation, attention)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaf.data.jsonl import write_atomic
from leaf.config import Summary, make
from leaf.data.records import DataError
from leaf.report.config import ReportConfig


@dataclass
class ReportSummary(Summary):
    out: Path
    size: int  #: bytes of the page
    missing: list[str] = field(default_factory=list)  #: parts of a run this folder does not have
    errors: list[str] = field(default_factory=list)  #: problems met reading the run (listed on the page)

    def line(self) -> str:
        line = f"wrote {self.out} ({self.size / 1024:.0f} KiB)"
        if self.missing:
            line += f"; not in this run: {', '.join(self.missing)}"
        if self.errors:
            line += f"; {len(self.errors)} problem(s) reading the run, listed on the page"
        return line


def build_report(config: ReportConfig | None = None, **kwargs: Any) -> Path:
    """Write the page; return its path."""
    return write_report(config, **kwargs).out


def write_report(config: ReportConfig | None = None, **kwargs: Any) -> ReportSummary:
    """Write the page; return its path and what the run folder had."""
    from leaf.report.html import build_page
    from leaf.report.load import load_run

    config = make(ReportConfig, config, kwargs, "leaf.report()")
    if not Path(config.run).is_dir():
        raise DataError([f"{config.run}: run folder not found"])
    run = load_run(config.run, config.samples)
    out = Path(config.out) if config.out else Path(config.run) / "report.html"
    write_atomic(out, build_page(run, title=config.title, shown=config.shown, top=config.top,
                                    benchmark=config.benchmark))
    return ReportSummary(out, out.stat().st_size, list(run.missing), list(run.errors))


__all__ = ["ReportConfig", "ReportSummary", "build_report", "write_report"]
