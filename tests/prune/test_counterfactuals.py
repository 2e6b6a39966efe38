"""Counterfactual records from hand-made detections."""

from __future__ import annotations

from leaf.data.records import Sample
from leaf.prune.counterfactuals import build_records
from leaf.data.detections import as_detection


def _build(sample, det, **kw):
    """build_records on a detection given as JSON; records back as JSON (what `leaf prune` writes)."""
    recs, dropped = build_records(sample, as_detection(det), **kw)
    return [r.to_json() for r in recs], dropped

INSTR = "Tom, who is 12, has 3 apples. Hint: 7. How many?"
SAMPLE = Sample(id=5, instruction=INSTR, response="Step 1: 3 apples.\nStep 2: The answer is 3.", answer="3",
                meta={"family": "arith"})


def _tok(text, start, score, flag, field="instruction"):
    return {"text": text, "start": start, "end": start + len(text), "score": score, "flag": flag, "field": field}


DET = {
    "id": 5, "level": "instruction", "method": "gradient",
    "tokens": [_tok("12", 12, 0.05, True), _tok("Hint", 30, 0.5, False), _tok("7", 36, 0.01, True)],
    "spans": [[12, 14], [36, 37]],
}


def test_span_strategy_one_record_per_span():
    recs, dropped = _build(SAMPLE, DET, strategy="span")
    assert not dropped
    assert [r["id"] for r in recs] == ["5#s0", "5#s1"]
    assert recs[0]["instruction"] == "Tom, who is, has 3 apples. Hint: 7. How many?"
    assert recs[1]["instruction"] == "Tom, who is 12, has 3 apples. Hint:. How many?"
    assert recs[0]["removed"] == [{"field": "instruction", "start": 11, "end": 14, "text": " 12"}]
    for r in recs:
        assert r["source_id"] == 5 and r["response"] == SAMPLE.response and r["answer"] == "3"
        assert r["meta"] == {"family": "arith"} and r["loss_start"] is None and r["verified"] is None
        assert (r["strategy"], r["level"], r["method"], r["intervention"]) == ("span", "instruction", "gradient", "delete")


def test_collective_strategy_and_max_spans():
    (rec,), _ = _build(SAMPLE, DET, strategy="collective")
    assert rec["id"] == "5#c" and rec["instruction"] == "Tom, who is, has 3 apples. Hint:. How many?"
    # max_spans keeps the most confounding span (lowest score: "7", 0.01)
    recs, _ = _build(SAMPLE, DET, strategy="span", max_spans=1)
    assert [r["instruction"] for r in recs] == ["Tom, who is 12, has 3 apples. Hint:. How many?"]


def test_no_spans_no_record_and_empty_instruction_dropped():
    assert _build(SAMPLE, {**DET, "spans": []}) == ([], [])
    whole = {**DET, "spans": [[0, len(INSTR)]]}
    recs, dropped = _build(SAMPLE, whole)
    assert recs == [] and dropped[0].reason == "pruning would empty the instruction"


def test_response_level_record_targets_the_later_segment():
    response = SAMPLE.response
    loss_start = response.index("Step 2")
    det = {
        "id": 5, "key": "5@1", "level": "response", "method": "gradient",
        "tokens": [_tok("3", 8, 0.0, True, "response"), _tok("12", 12, 0.02, True)],
        "spans": [[12, 14]], "response_spans": [[8, 9]],
        "loss_start": loss_start, "loss_end": len(response),
    }
    recs, _ = _build(SAMPLE, det, strategy="span")
    assert [r["id"] for r in recs] == ["5@1#s0", "5@1#s1"]
    instr_rec, resp_rec = recs
    assert instr_rec["instruction"] == "Tom, who is, has 3 apples. Hint: 7. How many?"
    assert instr_rec["response"] == response and instr_rec["loss_start"] == loss_start
    assert resp_rec["instruction"] == INSTR
    assert resp_rec["response"] == "Step 1: apples.\nStep 2: The answer is 3."
    assert resp_rec["response"][resp_rec["loss_start"]:] == "Step 2: The answer is 3."
    assert resp_rec["removed"] == [{"field": "response", "start": 8, "end": 10, "text": "3 "}]
    (both,), _ = _build(SAMPLE, det, strategy="collective")
    assert both["response"][both["loss_start"]:] == "Step 2: The answer is 3."
    assert both["level"] == "response"


def test_intervention_none_writes_the_analysed_sample_unchanged():
    (rec,), dropped = _build(SAMPLE, DET, intervention="none")
    assert dropped == [] and rec["id"] == "5#orig" and rec["source_id"] == SAMPLE.id
    assert (rec["instruction"], rec["response"], rec["removed"]) == (SAMPLE.instruction, SAMPLE.response, [])
    assert (rec["strategy"], rec["intervention"], rec["method"], rec["loss_start"]) == ("none", "none", "gradient", None)
    # a detection without spans still gives its sample: re-weighting keeps every analysed sample
    (same,), _ = _build(SAMPLE, {**DET, "spans": []}, intervention="none")
    assert same["instruction"] == SAMPLE.instruction
