"""Detection quality against ground-truth confounder spans (pure functions).

Token level: a token is *relevant* when it is not white space and its
character range overlaps a ground-truth span of its sample; it is *retrieved*
when flagged. Precision, recall and F1 are micro-averaged over all tokens of
all analysed samples. The hit rate is the share of samples with a ground-truth
span in which at least one flagged token overlaps one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from leaf.data.detections import Detection, TokenScore
from leaf.data.spans import overlaps
from leaf.detect.decision import flag_threshold, whitespace_mask

Span = Sequence[int]


def rethreshold(tokens: Sequence[TokenScore], tau: float) -> list[bool]:
    """Flags of the gradient rule at another ``tau``, from the stored scores (the rule of :mod:`leaf.detect.decision`)."""
    import torch

    scores = None if any(t.score is None for t in tokens) else torch.tensor([t.score for t in tokens], dtype=torch.float64)
    return flag_threshold(scores, tau, ~whitespace_mask([t.text for t in tokens])).tolist()


def detection_quality(
    detections: Iterable[Detection],
    truth: Mapping[str, list[Span]],
    *,
    tau: float | None = None,
) -> dict[str, float | int]:
    """Precision, recall, F1 and hit rate of instruction-level detections.

    ``truth`` maps a sample id (as a string) to its ground-truth spans. With
    ``tau``, flags are recomputed from the stored scores (gradient rule).
    """
    tp = fp = fn = 0
    hits = with_truth = samples = flagged = tokens_seen = 0
    for det in detections:
        spans = truth.get(str(det.id), [])
        toks = det.tokens_of("instruction")
        flags = rethreshold(toks, tau) if tau is not None else [t.flag for t in toks]
        samples += 1
        hit = False
        for t, flag in zip(toks, flags):
            relevant = bool(t.text.strip()) and overlaps(t.start, t.end, spans)
            tp += flag and relevant
            fp += flag and not relevant
            fn += relevant and not flag
            hit |= flag and relevant
            flagged += flag
            tokens_seen += 1
        if spans:
            with_truth += 1
            hits += hit
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "hit_rate": hits / with_truth if with_truth else 0.0,
        "samples": samples,
        "samples_with_truth": with_truth,
        "flagged_share": flagged / tokens_seen if tokens_seen else 0.0,
    }


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    import statistics

    n = len(values)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if n > 1 else 0.0, "n": n}
