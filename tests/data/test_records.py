"""Validation names file, line and field of every problem."""

from __future__ import annotations

import json

import pytest

from leaf.data.records import DataError, load_samples, select_samples


def _write(tmp_path, lines):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"id": 1, "instruction": "Q?", "response": "A."})


@pytest.mark.parametrize(
    "line,needle",
    [
        ('{"id": 2, "instruction": "Q?", "response": "A."', "in.jsonl:2: bad JSON"),
        ('{"id": 2, "response": "A."}', "in.jsonl:2: field 'instruction': missing"),
        ('{"id": 2, "instruction": "Q?"}', "in.jsonl:2: field 'response': missing"),
        ('{"instruction": "Q?", "response": "A."}', "in.jsonl:2: field 'id': missing"),
        ('{"id": [2], "instruction": "Q?", "response": "A."}', "in.jsonl:2: field 'id': must be a string or an integer"),
        ('{"id": 2, "instruction": 5, "response": "A."}', "in.jsonl:2: field 'instruction': must be a string, got int"),
        ('{"id": 2, "instruction": "   ", "response": "A."}', "in.jsonl:2: field 'instruction': is empty"),
        ('{"id": 2, "instruction": "Q?", "response": ""}', "in.jsonl:2: field 'response': is empty"),
        ('{"id": "1", "instruction": "Q?", "response": "A."}', "in.jsonl:2: field 'id': duplicate id '1' (first on line 1)"),
        ('{"id": 2, "instruction": "Q?", "response": "A.", "meta": []}', "in.jsonl:2: field 'meta': must be an object"),
        ('{"id": 2, "instruction": "Q?", "response": "A.", "student_correct": "no"}', "field 'student_correct'"),
        ('[1, 2]', "in.jsonl:2: expected a JSON object"),
    ],
)
def test_each_bad_input_is_named(tmp_path, line, needle):
    path = _write(tmp_path, [GOOD, line])
    with pytest.raises(DataError) as err:
        load_samples(path)
    assert needle in str(err.value)


def test_all_problems_are_reported_at_once(tmp_path):
    path = _write(tmp_path, [GOOD, '{"id": 2}', "not json", GOOD])
    with pytest.raises(DataError) as err:
        load_samples(path)
    assert len(err.value.problems) == 4  # two missing fields, bad JSON, duplicate id


def test_extra_fields_and_blank_lines_survive(tmp_path):
    rec = {"id": "a", "instruction": "Q?", "response": "A.", "answer": 3, "source_id": 7, "meta": {"k": 1}}
    path = _write(tmp_path, ["", json.dumps(rec), ""])
    (s,) = load_samples(path)
    assert s.answer == "3" and s.extra == {"source_id": 7} and s.meta == {"k": 1}
    assert s.to_json() == {**rec, "answer": "3"}


def test_select_student_wrong(tmp_path):
    rows = [
        {"id": 1, "instruction": "Q", "response": "A", "teacher_correct": True, "student_correct": False},
        {"id": 2, "instruction": "Q", "response": "A", "teacher_correct": True, "student_correct": True},
        {"id": 3, "instruction": "Q", "response": "A", "teacher_correct": False, "student_correct": False},
    ]
    samples = load_samples(_write(tmp_path, [json.dumps(r) for r in rows]))
    assert [s.id for s in select_samples(samples, "student-wrong")] == [1]
    assert len(select_samples(samples, "all")) == 3
    unlabelled = load_samples(_write(tmp_path, [GOOD]))
    with pytest.raises(DataError, match="run `leaf label` first"):
        select_samples(unlabelled, "student-wrong")
