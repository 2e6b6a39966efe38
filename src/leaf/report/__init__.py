"""``leaf report``: one static HTML page of a run folder (detections, training, evaluation, attention)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leaf.config import option


@dataclass
class ReportConfig:
    """Options of ``leaf report``."""

    run: Path = option(help="run folder (detections.jsonl, counterfactuals.jsonl, train*/, eval/, analysis/)")
    out: Path | None = option(None, help="HTML file to write (default: RUN/report.html)")
    samples: Path | None = option(
        None, help="the original samples, to show the exact instruction text between tokens (optional)"
    )
    shown: int = option(5, help="how many detection samples to show with coloured tokens")
    top: int = option(20, help="how many of the most frequent flagged strings to list")
    title: str | None = option(None, help="page title (default: 'LeaF run: <folder name>')")


def build_report(config: ReportConfig | None = None, **kwargs: Any) -> Path:
    """Write the page; return its path."""
    return write_report(config, **kwargs)[0]


def write_report(config: ReportConfig | None = None, **kwargs: Any) -> tuple[Path, Any]:
    """Write the page; return its path and the :class:`~leaf.report.load.RunData` shown."""
    from leaf.config import build
    from leaf.report.html import build_page
    from leaf.report.load import load_run

    if config is None:
        config = build(ReportConfig, kwargs, "build_report()")
    elif kwargs:
        raise TypeError("pass either a config or keyword arguments, not both")
    run = load_run(config.run, config.samples)
    out = Path(config.out) if config.out else Path(config.run) / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_page(run, title=config.title, shown=config.shown, top=config.top), encoding="utf-8")
    return out, run
