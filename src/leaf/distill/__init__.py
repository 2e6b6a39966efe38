"""Stage 2 of LeaF: causal attention distillation (teacher -> student on original and pruned samples).

* :mod:`leaf.distill.config` -- :class:`DistillConfig` and :class:`CacheConfig` (the options);
* :mod:`leaf.distill.losses` -- the KL / hybrid losses as pure, chunked tensor functions;
* :mod:`leaf.distill.data` -- training examples from samples and counterfactual records, and the collator;
* :mod:`leaf.distill.trainer` -- :class:`DistillTrainer`, a ``transformers.Trainer`` subclass;
* :mod:`leaf.distill.run` -- ``distill()`` and ``build_trainer()``: one whole run, with
  :mod:`~leaf.distill.arguments` (the ``TrainingArguments``), :mod:`~leaf.distill.callbacks` (metrics files),
  :mod:`~leaf.distill.metrics` (the held-out loss), :mod:`~leaf.distill.heldout` (the evaluation set),
  :mod:`~leaf.distill.resume` (checkpoints and the resume rule) and :mod:`~leaf.distill.teacher` (where the
  live teacher runs);
* :mod:`leaf.distill.card` -- the model card and ``--push-to-hub``;
* :mod:`leaf.distill.cache` -- the offline teacher top-k log-prob cache.

Python API: ``from leaf.distill import DistillConfig, distill``; ``distill(DistillConfig(...))`` or
``distill(student=..., teacher=..., ...)``. ``DistillTrainer`` is importable and subclassable; it is
loaded on first use so that importing :mod:`leaf.distill` stays light.
"""

from __future__ import annotations

from typing import Any

from leaf.distill.config import CacheConfig, DistillConfig


def distill(config: DistillConfig | None = None, **kwargs: Any) -> Any:
    """Run a distillation; see :func:`leaf.distill.run.distill`."""
    from leaf.distill.run import distill as _distill

    return _distill(config, **kwargs)


def build_cache(config: CacheConfig | None = None, **kwargs: Any) -> Any:
    """Write a teacher top-k cache; see :func:`leaf.distill.cache.build_cache`."""
    from leaf.distill.cache import build_cache as _build_cache

    return _build_cache(config, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "DistillTrainer":
        from leaf.distill.trainer import DistillTrainer

        return DistillTrainer
    raise AttributeError(f"module 'leaf.distill' has no attribute {name!r}")


__all__ = ["CacheConfig", "DistillConfig", "DistillTrainer", "build_cache", "distill"]
