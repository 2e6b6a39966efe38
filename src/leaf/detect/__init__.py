"""Stage 1: confounding-token detection (gradient saliency, teacher vs student)."""

from leaf.detect.run import DetectConfig, DetectSummary, detect

__all__ = ["DetectConfig", "DetectSummary", "detect"]
