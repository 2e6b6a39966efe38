"""The demo benchmark: synthetic tasks with confounders known by construction, and tiny models.

* :mod:`leaf.demo.tasks` -- the task generator (three families, a bias knob,
  ground-truth ``meta.confounder_spans``);
* :mod:`leaf.demo.models` -- a tokenizer, a teacher and a student trained
  locally on those tasks and cached on disk;
* :mod:`leaf.demo.greedy` -- greedy decoding and answer matching used to
  measure them.
"""

from __future__ import annotations

from typing import Any

from leaf.demo.config import DemoConfig


def demo(config: DemoConfig | None = None, **kwargs: Any) -> Any:
    """Run the demo; see :func:`leaf.demo.pipeline.demo`."""
    from leaf.demo.pipeline import demo as _demo

    return _demo(config, **kwargs)


__all__ = ["DemoConfig", "demo"]
