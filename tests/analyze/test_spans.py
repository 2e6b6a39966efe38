"""Reading flagged spans from detections, counterfactuals and samples files."""

from __future__ import annotations

import json

import pytest

from leaf.analyze.spans import load_span_samples, restore_original
from leaf.data.spans import merge_overlapping
from leaf.data.records import DataError

INSTR = "Tom has 3 apples. Ignore the hint: 42. He buys 5 more. How many?"
RESP = "3 + 5 = 8. The answer is 8."


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _span(text):
    start = INSTR.index(text)
    return [start, start + len(text)]


def test_merge_spans():
    assert merge_overlapping([(5, 9), (0, 2), (8, 12), (12, 14), (3, 3)]) == [(0, 2), (5, 14)]


def test_restore_original_puts_pieces_back():
    pieces = [{"start": s, "end": e, "text": INSTR[s:e]} for s, e in (_span("Ignore the hint: 42."), _span("5 "))]
    pruned = INSTR
    for p in sorted(pieces, key=lambda p: -p["start"]):
        pruned = pruned[: p["start"]] + pruned[p["end"] :]
    assert restore_original(pruned, pieces) == INSTR


def test_samples_with_confounder_spans(tmp_path):
    path = _write(
        tmp_path / "s.jsonl",
        [
            {"id": 1, "instruction": INSTR, "response": RESP, "meta": {"confounder_spans": [_span("hint: 42")]}},
            {"id": 2, "instruction": INSTR, "response": RESP, "meta": {"confounder_spans": []}},
        ],
    )
    kind, out = load_span_samples(path)
    assert kind == "samples"
    assert [(s.id, s.spans) for s in out] == [(1, [tuple(_span("hint: 42"))]), (2, [])]


def test_detections_need_samples_and_match_by_id(tmp_path):
    samples = _write(tmp_path / "s.jsonl", [{"id": "a", "instruction": INSTR, "response": RESP}])
    det = _write(
        tmp_path / "d.jsonl",
        [{"id": "a", "level": "instruction", "method": "gradient", "tokens": [],
          "spans": [_span("42"), _span("hint")]}],
    )
    with pytest.raises(DataError, match="--samples"):
        load_span_samples(det)
    kind, out = load_span_samples(det, samples)
    assert kind == "detections"
    assert out[0].instruction == INSTR and out[0].response == RESP
    assert out[0].spans == sorted([tuple(_span("42")), tuple(_span("hint"))])
    head = {"level": "instruction", "method": "gradient", "tokens": []}
    bad = _write(tmp_path / "bad.jsonl", [{"id": "zz", "spans": [[0, 3]], **head}, {"id": "a", "spans": [[0, 999]], **head}])
    with pytest.raises(DataError) as err:
        load_span_samples(bad, samples)
    assert "bad.jsonl:1: field 'id'" in str(err.value)
    assert "bad.jsonl:2: field 'spans'" in str(err.value)


def _counterfactual(sid, n, texts, level="instruction"):
    removed = [{"start": _span(t)[0], "end": _span(t)[1], "text": t} for t in texts]
    pruned = INSTR
    for p in sorted(removed, key=lambda p: -p["start"]):
        pruned = pruned[: p["start"]] + pruned[p["end"] :]
    return {
        "id": f"{sid}-{n}", "source_id": sid, "instruction": pruned, "response": RESP, "removed": removed,
        "strategy": "span", "level": level, "method": "gradient", "intervention": "delete",
    }


def test_counterfactuals_merge_per_source_with_or_without_samples(tmp_path):
    cf = _write(
        tmp_path / "cf.jsonl",
        [
            _counterfactual(7, 0, ["Ignore the hint: 42."]),
            _counterfactual(7, 1, ["buys 5 more"]),
            _counterfactual(8, 0, ["How many?"], level="response"),  # skipped: not instruction level
        ],
    )
    for samples in (None, _write(tmp_path / "s.jsonl", [{"id": 7, "instruction": INSTR, "response": RESP}])):
        kind, out = load_span_samples(cf, samples)
        assert kind == "counterfactuals"
        assert len(out) == 1 and str(out[0].id) == "7"
        assert out[0].instruction == INSTR
        assert out[0].spans == [tuple(_span("Ignore the hint: 42.")), tuple(_span("buys 5 more"))]


def test_counterfactual_text_must_match_the_original(tmp_path):
    rec = _counterfactual(7, 0, ["Ignore the hint: 42."])
    rec["removed"][0]["text"] = "something else"
    cf = _write(tmp_path / "cf.jsonl", [rec])
    samples = _write(tmp_path / "s.jsonl", [{"id": 7, "instruction": INSTR, "response": RESP}])
    with pytest.raises(DataError, match=r"cf.jsonl:1: field 'removed'"):
        load_span_samples(cf, samples)


def test_unknown_records_are_refused(tmp_path):
    path = _write(tmp_path / "x.jsonl", [{"id": 1, "instruction": INSTR, "response": RESP}])
    with pytest.raises(DataError, match="x.jsonl:1: cannot tell"):
        load_span_samples(path)
