"""Stage: benchmark evaluation (``leaf evaluate``) and labelling who answers right (``leaf label``)."""

from leaf.evaluate.config import EvaluateConfig, LabelConfig
from leaf.evaluate.label import LabelSummary, label
from leaf.evaluate.run import EvaluateSummary, evaluate

__all__ = ["EvaluateConfig", "EvaluateSummary", "LabelConfig", "LabelSummary", "evaluate", "label"]
