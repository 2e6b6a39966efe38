"""End-to-end distillation from a teacher with another (tiny) tokenizer: trains, the loss falls, it resumes."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from leaf.distill import distill
from leaf.distill.data import build_example, build_pair_example, load_examples
from leaf.data.records import Sample
from leaf.tiny import DEFAULT_CORPUS


def test_pair_example_aligns_every_response_character(distill_setup, other_teacher):
    from leaf.models import load_tokenizer

    s_tok, t_tok = load_tokenizer(str(distill_setup / "student")), load_tokenizer(str(other_teacher))
    sample = Sample(id=1, instruction=DEFAULT_CORPUS[0], response=DEFAULT_CORPUS[6])
    ex = build_pair_example(s_tok, t_tok, sample)
    same = build_example(s_tok, sample)
    assert ex.labels == same.labels  # the student's loss tokens are today's (response + end of turn)
    assert len(ex.groups) == ex.n_loss_tokens and len(ex.teacher_groups) == sum(
        1 for y in ex.teacher_labels[1:] if y != -100)
    assert sorted(set(ex.groups)) == sorted(set(ex.teacher_groups)) == list(range(max(ex.groups) + 1))
    # the teacher's loss tokens spell the whole response (its own rendering), then its end-of-turn token
    t_text = t_tok.decode([t for t, y in zip(ex.teacher_input_ids, ex.teacher_labels) if y != -100])
    assert t_text == sample.response + "<|im_end|>"


def _run(setup, teacher, out, **kw):
    base = dict(student=str(setup / "student"), teacher=None if teacher is None else str(teacher), data=setup / "d.jsonl",
                counterfactuals=setup / "cf.jsonl", out=out, save_steps=1000, cross_tokenizer="auto")
    base.update(kw)
    return distill(**base)


def _metrics(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_trains_loss_falls_and_resumes(distill_setup, other_teacher, tmp_path):
    common = dict(max_steps=6, save_steps=3, batch_size=4, grad_accum=1, learning_rate=3e-2, warmup_steps=0,
                  lr_scheduler="constant")
    summary = _run(distill_setup, other_teacher, tmp_path / "full", **common)
    rows = _metrics(summary.out)
    assert "aligned 1:1" in summary.line() and 0 < summary.aligned_1to1 <= 1
    assert all(0 <= r["aligned_1to1"] <= 1 and r["aligned_1to1"] + r["aligned_merged"] == pytest.approx(1) for r in rows)
    assert all(r["cd_loss"] > 0 and r["kd_loss"] > 0 for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]
    run = json.loads((summary.out / "leaf_config.json").read_text())["_run"]["cross_tokenizer"]
    assert run["method"] == "gold" and run["shared_vocab"] > 100
    part = tmp_path / "part"
    part.mkdir()
    shutil.copytree(summary.out / "checkpoint-3", part / "checkpoint-3")
    shutil.copy(summary.out / "leaf_config.json", part / "leaf_config.json")
    resumed = _run(distill_setup, other_teacher, part, **common)
    assert resumed.resumed
    a, b = load_file(str(summary.out / "model.safetensors")), load_file(str(part / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_uld_trains(distill_setup, other_teacher, tmp_path):
    summary = _run(distill_setup, other_teacher, tmp_path / "uld", cross_tokenizer="uld", max_steps=2, batch_size=6,
                   grad_accum=1)
    assert all(r["kd_loss"] > 0 for r in _metrics(summary.out))


def test_gold_with_one_tokenizer_equals_the_same_tokenizer_run(distill_setup, tmp_path):
    kw = dict(max_steps=1, batch_size=12, grad_accum=1, lam=0.3, temperature=2.0)
    plain = _metrics(_run(distill_setup, distill_setup / "teacher", tmp_path / "a", cross_tokenizer="off", **kw).out)
    gold = _metrics(_run(distill_setup, distill_setup / "teacher", tmp_path / "b", cross_tokenizer="gold", **kw).out)
    assert gold[0]["loss"] == pytest.approx(plain[0]["loss"], rel=1e-5)
    assert gold[0]["aligned_1to1"] == 1.0


def _cache(setup, teacher, out, **kw):
    from leaf.distill.cache import build_cache

    return build_cache(teacher=str(teacher), tokenizer=str(setup / "student"), data=setup / "d.jsonl",
                       counterfactuals=setup / "cf.jsonl", out=out, **kw)


@pytest.mark.parametrize("method", ["auto", "uld"])
def test_a_cache_of_the_teachers_whole_vocabulary_equals_the_live_teacher(distill_setup, other_teacher, tmp_path,
                                                                          method):
    from leaf.models import load_tokenizer

    vocab = len(load_tokenizer(str(other_teacher)))
    summary = _cache(distill_setup, other_teacher, tmp_path / "c", cross_tokenizer="auto", top_k=vocab, temperature=2.0)
    manifest = json.loads((summary.out / "manifest.json").read_text())
    assert manifest["cross_tokenizer"] == "gold" and manifest["teacher_tokenizer_hash"]
    assert (summary.out / "teacher_tokenizer" / "tokenizer.json").exists()
    kw = dict(max_steps=1, batch_size=12, grad_accum=1, lam=0.3, temperature=2.0, cross_tokenizer=method)
    live = _metrics(_run(distill_setup, other_teacher, tmp_path / "live", **kw).out)[0]
    cached = _metrics(_run(distill_setup, None, tmp_path / "cached", teacher_cache=summary.out, **kw).out)[0]
    for key in ("loss", "kd_loss", "cd_loss", "aligned_1to1"):
        assert cached[key] == pytest.approx(live[key], rel=1e-5)


def test_a_topk_cache_holds_the_teachers_own_rows(distill_setup, other_teacher, tmp_path):
    """Ids, log-probs and the actual token's log-prob equal the teacher run here on its own rendering."""
    from leaf.distill.cache import TeacherCache
    from leaf.models import load_model, load_tokenizer

    summary = _cache(distill_setup, other_teacher, tmp_path / "c", cross_tokenizer="auto", top_k=8)
    cache = TeacherCache.open(summary.out)
    s_tok, t_tok = load_tokenizer(str(distill_setup / "student")), load_tokenizer(str(other_teacher))
    examples = load_examples(s_tok, distill_setup / "d.jsonl", distill_setup / "cf.jsonl", teacher_tokenizer=t_tok)
    teacher = load_model(str(other_teacher))
    for ex in examples[::3]:
        ids, labels = torch.tensor([ex.teacher_input_ids]), torch.tensor(ex.teacher_labels)
        with torch.no_grad():
            lp = torch.log_softmax(teacher(input_ids=ids).logits[0, :-1].float(), -1)
        rows = (labels[1:] != -100).nonzero().squeeze(-1)
        top = lp[rows].topk(8, -1)
        got_lp, got_ids = cache.get(ex.key)
        torch.testing.assert_close(got_lp, top.values, rtol=1e-5, atol=1e-5)
        assert got_ids.long().tolist() == top.indices.tolist()
        torch.testing.assert_close(cache.actual(ex.key), lp[rows, labels[1:][rows]], rtol=1e-5, atol=1e-5)
    summary_line = summary.line()
    assert "bytes per token" in summary_line
    # trains from it; the loss of the whole set falls
    common = dict(max_steps=4, batch_size=12, grad_accum=1, learning_rate=3e-2, warmup_steps=0, lr_scheduler="constant")
    rows = _metrics(_run(distill_setup, None, tmp_path / "d", teacher_cache=summary.out, **common).out)
    assert rows[-1]["loss"] < rows[0]["loss"] and all(r["cd_loss"] > 0 for r in rows)


def test_caches_across_tokenizers_are_refused_in_one_line_where_they_do_not_fit(distill_setup, other_teacher, tmp_path,
                                                                                capsys):
    from leaf.cli import main

    rc = main(["cache-teacher", "--teacher", str(other_teacher), "--tokenizer", str(distill_setup / "student"),
               "--data", str(distill_setup / "d.jsonl"), "--out", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 2 and "top-k cache stores ids of one vocabulary" in err and "--cross-tokenizer auto" in err
    assert err.count("\n") == 1
    cache = _cache(distill_setup, other_teacher, tmp_path / "x", cross_tokenizer="auto", top_k=4).out
    capsys.readouterr()
    base = ["distill", "--student", str(distill_setup / "student"), "--teacher-cache", str(cache), "--data",
            str(distill_setup / "d.jsonl"), "--counterfactuals", str(distill_setup / "cf.jsonl"), "--max-steps", "1"]
    rc = main(base + ["--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "train from it with --cross-tokenizer auto" in err and err.count("\n") == 1, err
    same = _cache(distill_setup, distill_setup / "teacher", tmp_path / "same", top_k=4).out
    for method in ("gold", "uld"):
        with pytest.raises(Exception, match=f"cross-tokenizer {method} with a cache of the student's own"):
            distill(student=str(distill_setup / "student"), teacher_cache=same, data=distill_setup / "d.jsonl",
                    out=tmp_path / "y", cross_tokenizer=method)


def test_held_out_evaluation_with_another_tokenizer(distill_setup, other_teacher, tmp_path):
    summary = _run(distill_setup, other_teacher, tmp_path / "ev", max_steps=2, batch_size=4, grad_accum=1,
                   eval_split=0.25, eval_steps=1)
    assert summary.eval_loss is not None and summary.eval_loss > 0


@pytest.mark.slow
def test_two_processes_equal_one_with_another_tokenizer(distill_setup, other_teacher, tmp_path):
    """2 CPU processes (gloo) at the same effective batch: the losses and the aligned shares of the log are those
    of 1 process (each process's aligned token counts gathered, as its losses are), and so is the update."""
    from tests.distributed.launch import launch

    out = tmp_path / "ddp"
    proc = launch(["distill", "--student", str(distill_setup / "student"), "--teacher", str(other_teacher), "--data",
                   str(distill_setup / "d.jsonl"), "--counterfactuals", str(distill_setup / "cf.jsonl"),
                   "--cross-tokenizer", "auto", "--grad-accum", "1", "--max-steps", "2", "--save-steps", "1000",
                   "--per-device-batch-size", "2", "--output-dir", str(out)], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = _run(distill_setup, other_teacher, tmp_path / "one", batch_size=4, grad_accum=1, max_steps=2).out
    m2, m1 = _metrics(out), _metrics(one)
    assert len(m2) == len(m1) == 2
    for a, b in zip(m2, m1):
        for key in ("loss", "kd_loss", "cd_loss", "grad_norm", "aligned_1to1", "aligned_merged"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    assert 0 < m1[0]["aligned_1to1"] < 1  # both kinds of group occur, so a per-process share could differ
    w2, w1 = load_file(str(out / "model.safetensors")), load_file(str(one / "model.safetensors"))
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-7)
