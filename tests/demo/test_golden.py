"""The before/after tool (tests/demo/golden.py) on a small hand-made run folder: what it snapshots, what it leaves
out, that a run equals itself, that changes of result are caught and float noise is not, and its command line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from .golden import cli, differences, read, snapshot


def fake_run(root: Path) -> tuple[Path, Path]:
    run, cache = root / "run", root / "cache"
    (run / "seed-0" / "eval").mkdir(parents=True)
    (run / "seed-0" / "train-kd").mkdir()
    seed = {"seed": 0, "accuracy": {"kd": {"clean": 0.22, "counterfactual": 0.02}}}
    (run / "results.json").write_text(json.dumps({"seeds": [seed], "summary": {"kd": 0.22}, "timings": {"s": 3.1}}))
    (run / "demo_settings.json").write_text("{}")
    det = [{"id": f"p{i}", "tokens": [{"text": "7", "g_teacher": 0.5 + i, "flag": i == 0}], "spans": [[0, 1]]}
           for i in range(3)]
    (run / "seed-0" / "det_gradient.jsonl").write_text("".join(json.dumps(r) + "\n" for r in det))
    (run / "seed-0" / "eval" / "kd.json").write_text(json.dumps({"model": str(cache / "m"), "run": str(run)}))
    (run / "seed-0" / "det_gradient.jsonl.meta.json").write_text('{"schema": 3}')  # left out: sidecar
    (run / "seed-0" / "train-kd" / "metrics.jsonl").write_text('{"tokens_per_s": 1234.5}\n')  # left out: log
    (run / "report.html").write_text("<html>")
    return run, cache


def test_a_run_equals_itself_and_changes_of_result_are_caught(tmp_path):
    run, cache = fake_run(tmp_path)
    snap = snapshot(run, cache)
    assert sorted(snap["files"]) == ["seed-0/det_gradient.jsonl", "seed-0/eval/kd.json"]
    assert snap["files"]["seed-0/eval/kd.json"] == {"model": "<CACHE>/m", "run": "<RUN>"}  # no machine folders
    assert snap["machine"]["threads"] >= 1 and snap["seeds"][0]["accuracy"]["kd"]["clean"] == 0.22
    golden = json.loads(json.dumps(snap))
    assert differences(golden, golden) == []
    changed = copy.deepcopy(golden)
    det = changed["files"]["seed-0/det_gradient.jsonl"]
    det[0]["tokens"][0]["flag"] = not det[0]["tokens"][0]["flag"]  # a flag
    det[1]["tokens"][0]["g_teacher"] *= 1.5  # a saliency far beyond float noise
    det[2]["spans"] = det[2]["spans"] + [[0, 1]]  # a span
    changed["seeds"][0]["accuracy"]["kd"]["clean"] += 0.04  # a number of the results
    found = differences(golden, changed)
    assert any(".tokens[0].flag" in f for f in found) and any("[1].tokens[0].g_teacher" in f for f in found)
    assert any("[2].spans" in f for f in found) and "results: seeds differs" in found
    assert any(f.startswith("results.seeds[0].accuracy.kd.clean: 0.22 ->") for f in found)
    assert len(found) == 5
    noise = copy.deepcopy(golden)
    noise["files"]["seed-0/det_gradient.jsonl"][1]["tokens"][0]["g_teacher"] *= 1 + 1e-6
    assert differences(golden, noise) == []  # float noise in a result file is not a change of result
    noise["seeds"][0]["accuracy"]["kd"]["clean"] *= 1 + 1e-6
    assert differences(golden, noise) != []  # the results themselves are compared exactly
    del changed["files"]["seed-0/eval/kd.json"]
    assert "seed-0/eval/kd.json: only in the recorded run" in differences(golden, changed)


def test_record_then_check_from_the_command_line(tmp_path, capsys):
    run, cache = fake_run(tmp_path)
    rec = tmp_path / "rec" / "quick.json.gz"
    assert cli(["record", str(rec), "--run", str(run), "--cache", str(cache)]) == 0
    assert read(rec)["files"].keys() == {"seed-0/det_gradient.jsonl", "seed-0/eval/kd.json"}
    assert cli(["check", str(rec), "--run", str(run), "--cache", str(cache)]) == 0
    assert "the same run as recorded" in capsys.readouterr().out
    (run / "seed-0" / "det_gradient.jsonl").write_text('{"id": "p0"}\n')
    assert cli(["check", str(rec), "--run", str(run), "--cache", str(cache)]) == 1
    assert "seed-0/det_gradient.jsonl: 3 items -> 1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli(["check", str(tmp_path / "none.json.gz"), "--run", str(run), "--cache", str(cache)])
    assert "run 'record' before the change" in capsys.readouterr().err
