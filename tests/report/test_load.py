"""leaf.report.load: a run folder read through the typed readers; what is missing or unreadable is named."""

from __future__ import annotations

import json

from leaf.data.counterfactuals import Counterfactual
from leaf.data.detections import Detection
from leaf.report.load import load_run

from .conftest import FLAGGED, SAMPLES, png, write_run


def test_a_whole_run_is_read_as_typed_records(tmp_path):
    run = load_run(write_run(tmp_path / "run"))
    assert run.missing == [] and run.errors == [] and run.unreadable == {}
    assert all(isinstance(d, Detection) for d in run.records("detections"))
    assert [str(d.id) for d in run.records("detections")] == [str(s["id"]) for s in SAMPLES]
    cfs = run.records("counterfactuals")
    assert all(isinstance(c, Counterfactual) for c in cfs) and len(cfs) == sum(len(v) for v in FLAGGED.values())
    # originals rebuilt from the deletion records: the text between detection tokens is exact
    assert run.instructions["gsm-1"] == SAMPLES[0]["instruction"] and run.instructions["2"] == SAMPLES[1]["instruction"]
    assert [t.name for t in run.training] == ["train", "train-kd"] and len(run.training[0].metrics) == 20
    assert [name for name, _ in run.evaluations] == ["leaf", "pre"]
    assert [name for name, _ in run.figures] == ["attention_heatmap_0_gsm-1.png", "attention_layers.png"]


def test_missing_parts_are_listed_and_unreadable_ones_named(tmp_path):
    root = write_run(tmp_path / "run", parts=("detections",))
    run = load_run(root)
    assert {m.split()[0] for m in run.missing} == {"counterfactuals.jsonl", "train*/metrics.jsonl", "eval/*.json",
                                                   "analysis/attention.json"}
    assert run.has("detections") and not run.has("counterfactuals") and run.records("counterfactuals") == []
    (root / "detections.jsonl").write_text(json.dumps({"id": 1, "spans": [[3, 1]]}) + "\n")
    (root / "analysis").mkdir()
    (root / "analysis" / "fake.png").write_bytes(b"not a png")
    (root / "analysis" / "real.png").write_bytes(png())
    run = load_run(root)
    assert run.detections is None and run.has("detections") and "detections" in run.unreadable
    assert any("detections.jsonl:1: field 'level': missing (file left out)" in e for e in run.errors)
    assert any("fake.png: not a PNG file" in e for e in run.errors) and [n for n, _ in run.figures] == ["real.png"]
    try:
        run.records("detections")
    except ValueError as exc:
        assert "field 'level': missing" in str(exc)
    else:  # pragma: no cover - the assertion above is the point
        raise AssertionError("an unreadable part must not read as empty")
