"""On-policy responses (``--student-responses``): the draw, the rewritten step against an off-policy run on the
student's own answers, resume, metrics and refusals."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from leaf.config import ConfigError
from leaf.distill import distill
from leaf.distill.onpolicy import drawn
from leaf.generation import generate
from leaf.models import load_model, load_tokenizer


def _metrics(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _run(setup, out, **kw):
    base = dict(student=str(setup / "student"), teacher=str(setup / "teacher"), data=setup / "d.jsonl",
                counterfactuals=setup / "cf.jsonl", out=out, save_steps=1000, batch_size=12, grad_accum=1,
                student_max_new_tokens=10)
    base.update(kw)
    return distill(**base)


def test_the_draw_is_seeded_per_step_and_example_and_takes_the_share():
    picks = [drawn(7, 3, i, 0.3) for i in range(20_000)]
    assert abs(sum(picks) / len(picks) - 0.3) < 0.015
    assert picks == [drawn(7, 3, i, 0.3) for i in range(20_000)]  # a resumed run draws alike
    other_step = [drawn(7, 4, i, 0.3) for i in range(20_000)]
    assert 0.15 < sum(a != b for a, b in zip(picks, other_step)) / len(picks) < 0.6  # a fresh draw per step
    assert all(drawn(0, 0, i, 1.0) for i in range(100)) and not any(drawn(0, 0, i, 0.0) for i in range(100))


def _own_answers(setup, tmp_path, max_new_tokens):
    """The data files with each response replaced by the student's greedy answer, generated one prompt at a
    time (a counterfactual answers its source's instruction); records with loss_start keep theirs."""
    tok = load_tokenizer(str(setup / "student"))
    student = load_model(str(setup / "student"))
    originals = [json.loads(x) for x in (setup / "d.jsonl").read_text().splitlines()]
    answer = {str(o["id"]): generate(student, tok, [o["instruction"]], max_new_tokens=max_new_tokens)[0]
              for o in originals}
    for o in originals:
        o["response"] = answer[str(o["id"])]
    records = [json.loads(x) for x in (setup / "cf.jsonl").read_text().splitlines()]
    for r in records:
        if r.get("loss_start") is None:
            r["response"] = answer[str(r["source_id"])]
    (tmp_path / "own.jsonl").write_text("".join(json.dumps(o) + "\n" for o in originals))
    (tmp_path / "own_cf.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return answer


@pytest.mark.parametrize("cross", [False, True], ids=["one-tokenizer", "cross-tokenizer"])
def test_a_fully_on_policy_step_equals_training_on_the_students_own_answers(distill_setup, other_teacher,
                                                                             tmp_path, cross):
    answers = _own_answers(distill_setup, tmp_path, 10)
    assert sum(bool(a.strip()) for a in answers.values()) >= 4  # the student does write something
    assert len(set(answers.values())) > 1
    common = dict(max_steps=1, student_temperature=0.0, lam=0.3, alpha=0.2)
    if cross:
        common.update(teacher=str(other_teacher), cross_tokenizer="auto")
    on = _run(distill_setup, tmp_path / "on", student_responses=1.0, **common)
    off = _run(distill_setup, tmp_path / "off", data=tmp_path / "own.jsonl", counterfactuals=tmp_path / "own_cf.jsonl",
               **common)
    (a,), (b,) = _metrics(on.out), _metrics(off.out)
    for key in ("loss", "kd_loss", "cd_loss", "ce_loss"):
        assert a[key] == pytest.approx(b[key], rel=1e-5), key
    reference = _metrics(_run(distill_setup, tmp_path / "ref", **common).out)[0]
    assert abs(reference["kd_loss"] - a["kd_loss"]) > 1e-3 * reference["kd_loss"]  # other responses, other loss
    assert a["student_responses"] == 10  # 8 originals + the 2 records without loss_start
    assert 0 < a["generation_share"] < 1 and a["student_response_tokens"] > 0
    wa, wb = load_file(str(on.out / "model.safetensors")), load_file(str(off.out / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-7)


def test_sampled_mixed_run_resumes_to_the_same_weights(distill_setup, tmp_path):
    common = dict(student_responses=0.5, max_steps=4, save_steps=2, batch_size=3, learning_rate=1e-2,
                  warmup_steps=1)
    full = _run(distill_setup, tmp_path / "full", **common).out
    part = tmp_path / "part"
    part.mkdir()
    shutil.copytree(full / "checkpoint-2", part / "checkpoint-2")  # as if the run died after step 2
    shutil.copy(full / "leaf_config.json", part / "leaf_config.json")
    resumed = _run(distill_setup, part, **common)
    assert resumed.resumed
    rows, again = _metrics(full), _metrics(part)
    assert sum(r["student_responses"] for r in rows) >= 2  # some steps were (partly) on-policy
    assert [r["student_responses"] for r in again] == [r["student_responses"] for r in rows[2:]]
    for key in ("loss", "kd_loss", "cd_loss"):
        assert [r[key] for r in again] == pytest.approx([r[key] for r in rows[2:]], rel=1e-5)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(part / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_on_policy_needs_a_live_teacher(distill_setup, tmp_path):
    with pytest.raises(ConfigError, match="--student-responses with --teacher-cache"):
        _run(distill_setup, tmp_path / "x", teacher=None, teacher_cache=tmp_path, student_responses=0.5)
