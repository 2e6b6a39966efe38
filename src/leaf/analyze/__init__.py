"""Attention analysis: how much response tokens attend to flagged (confounder) spans."""

from __future__ import annotations

from typing import Any

from leaf.analyze.config import AnalyzeConfig


def analyze(config: AnalyzeConfig | None = None, **kwargs: Any) -> Any:
    """Run the attention analysis; see :func:`leaf.analyze.run.analyze`."""
    from leaf.analyze.run import analyze as _analyze

    return _analyze(config, **kwargs)


__all__ = ["AnalyzeConfig", "analyze"]
