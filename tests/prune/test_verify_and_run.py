"""Verification keeps/drops the right records; `leaf prune` end to end with its summary."""

from __future__ import annotations

import json
import re

import pytest

from leaf.cli import main
from leaf.data.jsonl import read_jsonl
from leaf.prune.verify import verify_records
from leaf.data.counterfactuals import counterfactual_from_json


def _rec(rid, instruction, answer, field="instruction"):
    problems = []
    rec = counterfactual_from_json({"id": rid, "instruction": instruction, "response": "r", "answer": answer,
                                    "removed": [{"field": field, "start": 0, "end": 1, "text": "x"}],
                                    "verified": None}, rid, problems)
    assert rec is not None, problems
    return rec


def answer_by_reading(role, records):
    """A real answering rule: the teacher reads the last number; the student the first one."""
    out = []
    for text in (r["instruction"] for r in records):
        nums = re.findall(r"\d+", text)
        pick = nums[-1] if role == "teacher" else nums[0]
        out.append(f"The answer is {pick}." if nums else "I do not know.")
    return out


def check_final_number(prediction, sample):
    m = re.search(r"The answer is (\d+)", prediction)
    return bool(m) and m.group(1) == sample.answer


def test_verification_keeps_only_records_both_models_answer():
    records = [
        _rec("both-right", "the value is 8", "8"),  # one number: both read 8
        _rec("student-wrong", "ignore 3, the value is 8", "8"),  # student reads 3
        _rec("both-wrong", "the value is 2", "8"),
        _rec("response-only", "ignore 3, the value is 8", "8", field="response"),  # not checkable
    ]
    kept, dropped = verify_records(records, answer_by_reading, check_final_number)
    assert [r.id for r in kept] == ["both-right", "response-only"]
    assert [r.id for r in dropped] == ["student-wrong", "both-wrong"]
    assert {r.id: r.verified for r in records} == {
        "both-right": True, "student-wrong": False, "both-wrong": False, "response-only": None}


def test_teacher_only_verification_keeps_records_the_student_still_gets_wrong():
    records = [
        _rec("both-right", "the value is 8", "8"),
        _rec("student-wrong", "ignore 3, the value is 8", "8"),
        _rec("both-wrong", "the value is 2", "8"),
        _rec("teacher-wrong", "the value is 8, ignore 3", "8"),  # teacher reads 3, student 8
    ]
    asked = []

    def answer(role, recs):
        asked.append(role)
        return answer_by_reading(role, recs)

    kept, dropped = verify_records(records, answer, check_final_number, roles=("teacher",))
    assert asked == ["teacher"]  # the student is not asked
    assert [r.id for r in kept] == ["both-right", "student-wrong"]
    assert [r.id for r in dropped] == ["both-wrong", "teacher-wrong"]
    with pytest.raises(ValueError, match="roles"):
        verify_records(records, answer, check_final_number, roles=("oracle",))


SAMPLES = [
    {"id": "a", "instruction": "Tom, who is 12, has 3 apples.", "response": "The answer is 3.", "answer": "3"},
    {"id": "b", "instruction": "Key 7 maps to 31. Hint: 31.", "response": "The answer is 31.", "answer": "31"},
    {"id": "c", "instruction": "No confounder here.", "response": "The answer is 1.", "answer": "1"},
]


def _tok(text, start, flag):
    return {"text": text, "start": start, "end": start + len(text), "g_teacher": 1.0, "g_student": 1.0,
            "score": 0.0 if flag else 1.0, "flag": flag}


DETS = [
    {"id": "a", "level": "instruction", "method": "gradient", "spans": [[12, 14], [20, 21]],
     "tokens": [_tok("Tom,", 0, False), _tok(" 12", 11, True), _tok(" 3", 19, True), _tok(" apples.", 21, False)]},
    {"id": "b", "level": "instruction", "method": "gradient", "spans": [[24, 26]],
     "tokens": [_tok("Key", 0, False), _tok(" 31", 23, True)]},
]


@pytest.fixture()
def files(tmp_path):
    data, dets = tmp_path / "d.jsonl", tmp_path / "det.jsonl"
    data.write_text("".join(json.dumps(s) + "\n" for s in SAMPLES))
    dets.write_text("".join(json.dumps(d) + "\n" for d in DETS))
    return data, dets


def test_cli_writes_records_and_summary(files, tmp_path, capsys):
    data, dets = files
    out = tmp_path / "cf.jsonl"
    assert main(["prune", "--data", str(data), "--detections", str(dets), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 detections of 3 samples: 2 with spans" in printed and "3 records written" in printed
    recs = read_jsonl(out)
    assert [r["instruction"] for r in recs] == [
        "Tom, who is, has 3 apples.", "Tom, who is 12, has apples.", "Key 7 maps to 31. Hint:."]
    assert len({r["id"] for r in recs}) == 3
    summary = json.loads((tmp_path / "cf.jsonl.summary.json").read_text())
    assert summary["samples"] == 3 and summary["no_detection"] == 1 and summary["spans"] == 3
    assert summary["spans_per_sample"] == 1.5 and summary["removed_tokens"] == 3
    assert summary["removed_token_share"] == pytest.approx(3 / 6)
    assert dict((t, n) for t, n in summary["top_pruned"]) == {"12": 1, "3": 1, "31": 1}
    assert summary["verified_kept"] is None


def test_detection_for_an_unknown_sample_is_named(files, tmp_path, capsys):
    data, dets = files
    with dets.open("a") as fh:
        fh.write(json.dumps({**DETS[1], "id": "zzz"}) + "\n" + '{"id": "a"}\n')
    assert main(["prune", "--data", str(data), "--detections", str(dets), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{dets}:3: field 'id': 'zzz' is not in the samples file" in err
    assert f"{dets}:4: field 'tokens': missing" in err


def test_verify_needs_models(files, tmp_path, capsys):
    data, dets = files
    assert main(["prune", "--data", str(data), "--detections", str(dets), "--out", str(tmp_path / "o"),
                 "--verify"]) == 2
    assert "--verify needs --teacher and --student" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_verify_with_real_models_and_checker(files, tmp_path, capsys, monkeypatch):
    """Wiring of --verify: real generation and the exact checker (random tiny models answer wrongly)."""
    from leaf.tiny import build_model, build_tokenizer

    data, dets = files
    tok = build_tokenizer([s["instruction"] + " " + s["response"] for s in SAMPLES], style="chatml", vocab_size=300)
    for name, seed in (("teacher", 0), ("student", 1)):
        build_model(tok, seed=seed).save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    out = tmp_path / "cf.jsonl"
    assert main(["prune", "--data", str(data), "--detections", str(dets), "--out", str(out), "--verify",
                 "--teacher", str(tmp_path / "teacher"), "--student", str(tmp_path / "student"),
                 "--task", "exact", "--max-new-tokens", "4"]) == 0
    summary = json.loads((tmp_path / "cf.jsonl.summary.json").read_text())
    assert summary["verified_dropped"] == 3 and summary["verified_kept"] == 0
    assert read_jsonl(out) == []
    # the answers were kept on disk, one per record and role: a rerun resumes from them
    answers = read_jsonl(tmp_path / "cf.jsonl.verify-student.jsonl")
    assert sorted(r["id"].split("@")[0] for r in answers) == ["a#s0", "a#s1", "b#s0"]
    pruned = {r["id"]: r["instruction"] for r in answers}
    stamp = (tmp_path / "cf.jsonl.verify-teacher.jsonl").read_bytes()

    import leaf.generation as generation

    def no_generation(*args, **kwargs):
        raise AssertionError("a resumed --verify must not generate again")

    monkeypatch.setattr(generation, "generate", no_generation)
    import leaf.models

    def no_loading(*args, **kwargs):
        raise AssertionError("every answer is on disk: no model may be loaded")

    monkeypatch.setattr(leaf.models, "load_model", no_loading)
    assert main(["prune", "--data", str(data), "--detections", str(dets), "--out", str(out), "--verify",
                 "--teacher", str(tmp_path / "teacher"), "--student", str(tmp_path / "student"),
                 "--task", "exact", "--max-new-tokens", "4"]) == 0
    assert (tmp_path / "cf.jsonl.verify-teacher.jsonl").read_bytes() == stamp
    monkeypatch.undo()
    monkeypatch.setattr(generation, "generate", no_generation)
    # answers are keyed by the text answered: detections that prune other text are answered anew, never judged
    # on the old answers of the same record id
    rows = [json.loads(x) for x in dets.read_text().splitlines()]
    for row in rows:
        row["spans"] = [[0, 1]] if row["spans"] else []
    dets.write_text("".join(json.dumps(r) + "\n" for r in rows))
    generated = []
    monkeypatch.setattr(generation, "generate", lambda m, t, instructions, **kw: (
        generated.extend(instructions), kw["on_batch"](list(range(len(instructions))), ["x"] * len(instructions)))[0])
    assert main(["prune", "--data", str(data), "--detections", str(dets), "--out", str(out), "--verify",
                 "--teacher", str(tmp_path / "teacher"), "--student", str(tmp_path / "student"),
                 "--task", "exact", "--max-new-tokens", "4"]) == 0
    assert generated and not set(generated) & set(pruned.values())


def test_detections_made_on_other_text_are_refused(files, tmp_path, capsys):
    data, dets = files
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    rows[0]["instruction"] = "Ann, who is 12, has 3 pears."  # same id, other text: the offsets no longer fit
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "cf.jsonl"
    assert main(["prune", "--data", str(data), "--detections", str(dets), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "det.jsonl:1: field 'tokens': token 0" in err and "were the detections made on other data?" in err
    assert not out.exists()
    bad = [{**json.loads(x), "spans": [[5, 2]]} for x in dets.read_text().splitlines()]
    dets.write_text("".join(json.dumps(r) + "\n" for r in bad))
    assert main(["prune", "--data", str(data), "--detections", str(dets), "--out", str(out)]) == 2
    assert "field 'spans': span [5, 2] is empty, inverted or negative" in capsys.readouterr().err


def test_sidecar_records_detection_and_pruning_settings(files, tmp_path):
    data, dets = files
    (tmp_path / "det.jsonl.meta.json").write_text(json.dumps(
        {"schema": "leaf.detections", "schema_version": 1, "settings": {"tau": 0.15, "level": "instruction"}}))
    out = tmp_path / "cf.jsonl"
    assert main(["prune", "--data", str(data), "--detections", str(dets), "--out", str(out),
                 "--max-spans", "1", "--intervention", "delete"]) == 0
    meta = json.loads((tmp_path / "cf.jsonl.meta.json").read_text())
    assert meta["settings"]["detection"] == {"tau": 0.15, "level": "instruction"}
    assert meta["settings"]["prune"] == {"detections": str(dets), "strategy": "span", "intervention": "delete",
                                         "max_spans": 1, "verify": False}
