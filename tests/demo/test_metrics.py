"""Detection quality against ground truth on hand-made detections."""

from __future__ import annotations

import pytest

from leaf.demo.metrics import detection_quality, mean_std, rethreshold
from leaf.data.detections import as_detection


def _det(d):
    return as_detection({"level": "instruction", "method": "gradient", "spans": [], **d})


def _t(text, start, score, flag):
    return {"text": text, "start": start, "end": start + len(text), "score": score, "flag": flag}


DETS = [
    # truth [10, 12): " 12" overlaps it; flagged tokens: " 12" (TP), " guess" (FP)
    {"id": "a", "tokens": [_t("Tom", 0, 0.5, False), _t(" guess", 3, 0.05, True), _t(" 12", 9, 0.0, True),
                           _t(" ", 12, 0.0, False)]},
    # truth [4, 5): " 7" missed (FN), nothing flagged
    {"id": "b", "tokens": [_t("Key", 0, 0.9, False), _t(" 7", 3, 0.3, False)]},
    # no truth: the flag is a false positive
    {"id": "c", "tokens": [_t("Hi", 0, 0.0, True)]},
]
TRUTH = {"a": [[10, 12]], "b": [[4, 5]], "c": []}


def test_counts_by_hand():
    q = detection_quality([_det(d) for d in DETS], TRUTH)
    # TP 1 (a: " 12"), FP 2 (a: " guess", c: "Hi"), FN 1 (b: " 7"); whitespace " " never counts
    assert q["precision"] == pytest.approx(1 / 3)
    assert q["recall"] == pytest.approx(1 / 2)
    assert q["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert q["hit_rate"] == pytest.approx(1 / 2) and q["samples_with_truth"] == 2 and q["samples"] == 3
    assert q["flagged_share"] == pytest.approx(3 / 7)


def test_rethreshold_from_scores():
    assert rethreshold(_det(DETS[0]).tokens, 0.01) == [False, False, True, False]  # whitespace never flagged
    q = detection_quality([_det(d) for d in DETS], TRUTH, tau=0.3)
    # a: " guess"(FP), " 12"(TP); b: " 7"(TP); c: "Hi"(FP)
    assert (q["precision"], q["recall"], q["hit_rate"]) == (0.5, 1.0, 1.0)


def test_mean_std():
    assert mean_std([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(2**0.5), "n": 2}
    assert mean_std([5.0])["std"] == 0.0
