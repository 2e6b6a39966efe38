"""Counterfactual samples: cut the detected confounders out of instructions (and responses)."""

from leaf.prune.config import PruneConfig
from leaf.prune.run import PruneSummary, prune
from leaf.prune.text import prune_text

__all__ = ["PruneConfig", "PruneSummary", "prune", "prune_text"]
