"""Stage 2 of LeaF: causal attention distillation (teacher -> student on original and pruned samples).

* :mod:`leaf.distill.losses` -- the KL / hybrid losses as pure, chunked tensor functions;
* :mod:`leaf.distill.data` -- training examples from samples and counterfactual records, and the collator;
* :mod:`leaf.distill.trainer` -- :class:`DistillConfig` and a ``transformers.Trainer`` subclass;
* :mod:`leaf.distill.cache` -- the offline teacher top-k log-prob cache.

Python API: ``leaf.distill.distill(config)``.
"""

from __future__ import annotations

from typing import Any


def distill(config: Any = None, **kwargs: Any) -> Any:
    """Run a distillation; see :func:`leaf.distill.trainer.distill`."""
    from leaf.distill.trainer import distill as _distill

    return _distill(config, **kwargs)


__all__ = ["distill"]
