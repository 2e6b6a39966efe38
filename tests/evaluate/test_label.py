"""``leaf label`` on tiny local teacher/student models."""

from __future__ import annotations

import json

import pytest

from leaf.data.jsonl import read_jsonl

from leaf.cli import main
from leaf.data.records import DataError, load_samples, select_samples
from leaf.generation import generate
from leaf.evaluate.label import label
from leaf.models import load_model, load_tokenizer
from leaf.tiny import build_model


@pytest.fixture(scope="module")
def pair(tmp_path_factory, llama_tok):
    d = tmp_path_factory.mktemp("pair")
    for name, size, seed in (("teacher", 48, 11), ("student", 32, 12)):
        m = build_model(llama_tok, hidden_size=size, num_layers=2, seed=seed)
        m.save_pretrained(d / name)
        llama_tok.save_pretrained(d / name)
    return d / "teacher", d / "student"


def _gen(path, instructions):
    return generate(load_model(str(path)), load_tokenizer(str(path)), instructions, max_new_tokens=6)


def test_label_marks_teacher_and_student(tmp_path, pair):
    teacher, student = pair
    instructions = [f"Tom has {i} apples and buys 5 more." for i in range(4)]
    t_gen, s_gen = _gen(teacher, instructions), _gen(student, instructions)
    assert t_gen != s_gen
    # gold = the teacher's own answer for samples 0-1, the student's for 2, neither for 3
    answers = [t_gen[0], t_gen[1], s_gen[2], "no model says this"]
    data = tmp_path / "in.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": i, "instruction": ins, "response": "r", "answer": a, "meta": {"k": i}}) + "\n"
            for i, (ins, a) in enumerate(zip(instructions, answers))
        )
    )
    out = tmp_path / "labelled.jsonl"
    rc = main(
        [
            "label",
            "--teacher",
            str(teacher),
            "--student",
            str(student),
            "--data",
            str(data),
            "--task",
            "exact",
            "--out",
            str(out),
            "--max-new-tokens",
            "6",
            "--dtype",
            "float32",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["teacher_generation"] for r in rows] == t_gen
    assert [r["student_generation"] for r in rows] == s_gen
    from leaf.checkers.exact import normalize

    for r, t, s in zip(rows, t_gen, s_gen):
        assert r["teacher_correct"] == (normalize(t) == normalize(r["answer"]))
        assert r["student_correct"] == (normalize(s) == normalize(r["answer"]))
    assert rows[0]["teacher_correct"] and rows[1]["teacher_correct"] and rows[2]["student_correct"]
    assert not rows[3]["teacher_correct"] and not rows[3]["student_correct"]
    assert rows[0]["meta"] == {"k": 0}  # input fields survive
    # the output is valid input for the next stage
    picked = select_samples(load_samples(out), "student-wrong")
    assert [s.id for s in picked] == [r["id"] for r in rows if r["teacher_correct"] and not r["student_correct"]]
    # resuming does nothing new
    before = out.read_text()
    again = label(
        teacher=str(teacher),
        student=str(student),
        data=data,
        task="exact",
        out=out,
        max_new_tokens=6,
        dtype="float32",
        device="cpu",
    )
    assert out.read_text() == before and again.samples == 4


def test_label_refuses_samples_without_gold(tmp_path, pair):
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"id": 7, "instruction": "i", "response": "r"}) + "\n")
    with pytest.raises(DataError, match=r"in.jsonl:1: field 'answer': missing"):
        label(teacher=str(pair[0]), student=str(pair[1]), data=data, task="qa", out=tmp_path / "o.jsonl")


def test_label_can_skip_ungradable_samples(tmp_path, pair):
    data = tmp_path / "in.jsonl"
    data.write_text(
        json.dumps({"id": 1, "instruction": "Prove it.", "response": "A proof without a boxed answer."})
        + "\n"
        + json.dumps({"id": 2, "instruction": "1+1?", "response": "So \\boxed{2}."})
        + "\n"
    )
    out = tmp_path / "o.jsonl"
    kw = dict(teacher=str(pair[0]), student=str(pair[1]), data=data, task="math", out=out, max_new_tokens=4)
    with pytest.raises(DataError, match="--skip-ungradable"):
        label(**kw, dtype="float32", device="cpu")
    summary = label(**kw, dtype="float32", device="cpu", skip_ungradable=True)
    rows = read_jsonl(summary.out)
    assert summary.samples == len(rows)
    assert [r["id"] for r in rows] == [2]
    assert isinstance(rows[0]["teacher_correct"], bool) and isinstance(rows[0]["student_correct"], bool)
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == [2]
