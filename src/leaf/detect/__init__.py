"""Stage 1: confounding-token detection (gradient saliency, teacher vs student)."""

from leaf.detect.config import DetectConfig
from leaf.detect.run import DetectSummary, detect

__all__ = ["DetectConfig", "DetectSummary", "detect"]
