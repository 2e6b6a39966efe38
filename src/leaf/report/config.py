"""Options of ``leaf report``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from leaf.config import option


@dataclass
class ReportConfig:
    """Options of ``leaf report``."""

    run: Path = option(role="input", help="run folder (detections.jsonl, counterfactuals.jsonl, train*/, eval/, analysis/)")
    out: Path | None = option(None, role="output", help="HTML file to write (default: RUN/report.html)")
    samples: Path | None = option(
        None, role="input", help="the original samples, to show the exact instruction text between tokens (optional)"
    )
    shown: int = option(5, low=0, help="how many detection samples to show with coloured tokens")
    top: int = option(20, low=0, help="how many of the most frequent flagged strings to list")
    title: str | None = option(None, help="page title (default: 'LeaF run: <folder name>')")
    benchmark: Path | None = option(None, role="input", help="a `leaf demo` results.json: adds a first section with "
                                                            "every arm over seeds, paired tests, goals and the arms "
                                                            "figure (arms.png beside it)")

    def validate(self) -> None:
        if self.out is None:
            return
        out, run = Path(self.out).resolve(), Path(self.run).resolve()
        if out.is_relative_to(run) and out.exists() and out.suffix.lower() not in (".html", ".htm"):
            raise ValueError(f"--out {self.out} is a file of the run folder --run {self.run}: refusing to overwrite "
                             "an input (write the page to an .html path)")
