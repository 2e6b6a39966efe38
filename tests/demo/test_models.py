"""The demo's model builder: loss masking, training, caching, greedy answers."""

from __future__ import annotations

import json

import pytest

from leaf.demo import models as M
from leaf.demo.greedy import accuracy
from leaf.generation import generate
from leaf.demo.tasks import final_answer
from leaf.demo.tasks import generate as make_tasks

TINY = M.DemoModelsConfig(
    n_train=40,
    vocab_size=300,
    teacher=M.ModelSpec(hidden_size=16, num_layers=1, num_heads=2, steps=3, batch_size=4, seed=1),
    student=M.ModelSpec(hidden_size=16, num_layers=1, num_heads=2, steps=2, batch_size=4, seed=2),
)


@pytest.fixture(scope="module")
def tok():
    return M.build_tokenizer_for(TINY)


def test_labels_cover_exactly_the_response_and_its_end_token(tok):
    rec = make_tasks("code", "confounded", 1, seed=0)[0]
    (ids, labels), = M.encode_for_training(tok, [rec])
    kept = [i for i, y in zip(ids, labels) if y != -100]
    assert kept == ids[len(ids) - len(kept):]  # one contiguous tail
    assert tok.decode(kept) == rec["response"] + tok.eos_token
    # the planted value and the rest of the instruction are never trained on
    prompt_len = len(ids) - len(kept)
    assert rec["meta"]["planted"] in tok.decode(ids[:prompt_len])


def test_generation_prompt_tokenizes_as_a_prefix_of_the_training_text(tok):
    # otherwise greedy decoding would start from token sequences never seen in training
    from leaf.data.render import encode, render, render_prompt

    for family in ("arith", "code", "lookup"):
        rec = make_tasks(family, "counterfactual", 1, seed=1)[0]
        full = encode(tok, render(tok, rec["instruction"], rec["response"]).text).input_ids
        prompt = tok(render_prompt(tok, rec["instruction"]), add_special_tokens=False)["input_ids"]
        assert full[: len(prompt)] == prompt


def test_data_mixes_follow_the_config():
    teacher = M.teacher_data(TINY)
    student = M.student_data(TINY)
    assert {r["meta"]["split"] for r in teacher} == {"clean", "counterfactual"}
    assert all(not r["meta"]["planted_is_answer"] for r in teacher if r["meta"]["split"] == "counterfactual")
    n_clean = sum(r["meta"]["split"] == "clean" for r in student)
    assert n_clean == round(TINY.n_train * TINY.student_clean_share) * len(TINY.families)
    assert {r["meta"]["split"] for r in student} == {"clean", "confounded"}
    assert {r["meta"]["family"] for r in student} == set(TINY.families)


@pytest.mark.slow
def test_training_lowers_the_response_loss(tok):
    spec = M.ModelSpec(hidden_size=16, num_layers=1, num_heads=2, steps=30, batch_size=8, lr=1e-2, seed=0)
    model = M.build_model_for(tok, spec)
    losses = M.train(model, tok, make_tasks("arith", "clean", 16, seed=0), spec)
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert not model.training


def test_build_caches_by_settings(tmp_path, tok):
    logs = []
    first = M.build(TINY, cache_dir=tmp_path, log=logs.append)
    assert not first.cached and len(logs) == 4 and "training the teacher" in logs[0]
    assert first.root == tmp_path / TINY.key()
    settings = json.loads((first.root / "settings.json").read_text())
    assert settings["config"]["teacher"]["hidden_size"] == 16
    again = M.build(TINY, cache_dir=tmp_path, log=logs.append)
    assert again.cached and again.root == first.root and len(logs) == 4  # nothing retrained
    other = M.with_steps(TINY, 4, 2)
    assert other.key() != TINY.key()
    tokenizer, teacher, student = first.load()
    assert tokenizer.chat_template and "<|start_header_id|>" in tokenizer.chat_template
    assert teacher.config.hidden_size == student.config.hidden_size == 16
    assert teacher.config.vocab_size == len(tokenizer)


def test_another_student_reuses_the_teacher_and_trains_the_same_student(tmp_path):
    import torch

    first = M.build(TINY, cache_dir=tmp_path / "a", log=lambda m: None)
    other = M.with_steps(TINY, TINY.teacher.steps, 3)
    assert other.teacher_key() == TINY.teacher_key() and other.key() != TINY.key()
    logs: list[str] = []
    reused = M.build(other, cache_dir=tmp_path / "a", log=logs.append)
    assert any("reused" in m for m in logs) and not any("teacher:" in m or "the teacher" in m for m in logs)
    fresh = M.build(other, cache_dir=tmp_path / "b", log=lambda m: None)  # no cache to reuse: trains both
    for part in ("teacher/model.safetensors", "tokenizer/tokenizer.json"):
        assert (reused.root / part).read_bytes() == (first.root / part).read_bytes() == (fresh.root / part).read_bytes()
    from safetensors.torch import load_file

    a, b = (load_file(x.root / "student" / "model.safetensors") for x in (reused, fresh))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # another teacher setting is not reused
    assert M.with_steps(TINY, 4, 2).teacher_key() != TINY.teacher_key()


def test_greedy_generation_and_accuracy(tok):
    import torch

    model = M.build_model_for(tok, M.ModelSpec(hidden_size=16, num_layers=1, num_heads=2, steps=0))
    recs = make_tasks("arith", "clean", 5, seed=0)
    outs = generate(model, tok, [r["instruction"] for r in recs], max_new_tokens=6, batch_size=2)
    assert len(outs) == 5 and all(isinstance(o, str) for o in outs)
    # batched left-padded greedy == one at a time
    single = [generate(model, tok, [r["instruction"]], max_new_tokens=6)[0] for r in recs]
    assert outs == single
    expected = sum(final_answer(o) == r["answer"] for o, r in zip(outs, recs)) / 5
    assert accuracy(model, tok, recs, max_new_tokens=6) == expected
    assert torch.is_grad_enabled()
