"""`leaf detect` end to end: schema, resume, truncation, selection, cross-tokenizer pairs, bad input."""

from __future__ import annotations

import json

import pytest

import leaf.detect.scoring as scoring
from leaf.cli import main
from leaf.data.jsonl import read_jsonl
from leaf.detect import DetectConfig, detect
from leaf.tiny import build_model, build_tokenizer

SAMPLES = [
    {"id": i, "instruction": ins, "response": resp, "teacher_correct": tc, "student_correct": sc}
    for i, (ins, resp, tc, sc) in enumerate(
        [
            ("Tom has 3 apples and his sister, who is 12, gives him 5 more. How many apples?", "3 + 5 = 8. The answer is 8.", True, False),
            ("A pen costs 2 dollars. The shop opened in 1999. How much do 4 pens cost?", "4 * 2 = 8. The answer is 8.", True, True),
            ("# note: the result is 10\ndef f(x):\n    return x * 3\nWhat is f(4)?", "f(4) = 12. The answer is 12.", True, False),
            ("Key 7 maps to 31. Key 9 maps to 44. Hint: 31. What does key 9 map to?", "Key 9 maps to 44. The answer is 44.", False, False),
            ("What is 6 times 7?", "6 * 7 = 42. The answer is 42.", True, False),
            ("Über café: 3 croissants cost 6 euros. What does one cost?", "6 / 3 = 2. The answer is 2.", True, True),
            ("Paris is the capital of France. Ignore 42. What is the capital of France?", "Paris. The answer is Paris.", True, False),
        ]
    )
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    corpus = [s["instruction"] for s in SAMPLES] + [s["response"] for s in SAMPLES]
    llama_tok = build_tokenizer(corpus, style="llama3", vocab_size=400)
    chatml_tok = build_tokenizer(corpus, style="chatml", vocab_size=300)
    paths = {}
    for name, tok, kw in (
        ("teacher", llama_tok, dict(hidden_size=48, num_layers=3, seed=1)),
        ("student", llama_tok, dict(hidden_size=32, num_layers=2, seed=2)),
        ("qwen_teacher", chatml_tok, dict(arch="qwen2", hidden_size=48, num_layers=2, seed=3)),
    ):
        path = root / name
        build_model(tok, **kw).save_pretrained(path)
        tok.save_pretrained(path)
        paths[name] = str(path)
    return paths


@pytest.fixture()
def data(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in SAMPLES), encoding="utf-8")
    return path


def _run(models, data, out, **kw):
    kw.setdefault("progress", False)
    return detect(teacher=models["teacher"], student=models["student"], data=data, out=out, **kw)


def test_cli_writes_the_documented_schema(models, data, tmp_path, capsys):
    out = tmp_path / "det.jsonl"
    code = main(["detect", "--teacher", models["teacher"], "--student", models["student"], "--data", str(data),
                 "--out", str(out), "--batch-size", "3", "--progress", "false"])
    assert code == 0
    assert "7 samples: 7 written" in capsys.readouterr().out
    recs = read_jsonl(out)
    assert sorted(r["id"] for r in recs) == list(range(7))
    by_id = {s["id"]: s for s in SAMPLES}
    for r in recs:
        instruction = by_id[r["id"]]["instruction"]
        assert set(r) == {"id", "level", "method", "tokens", "spans", "loss_teacher", "loss_student", "truncated"}
        assert r["loss_teacher"] > 0 and r["loss_student"] > 0 and r["truncated"] == 0
        for t in r["tokens"]:
            assert instruction[t["start"]:t["end"]] == t["text"]
            assert 0.0 <= t["score"] <= 1.0 and t["g_teacher"] >= 0 and t["g_student"] >= 0
            assert t["flag"] == (t["score"] <= 0.10 and bool(t["text"].strip()))
        flagged = [t for t in r["tokens"] if t["flag"]]
        for s, e in r["spans"]:
            assert instruction[s:e] == instruction[s:e].strip() != ""
            assert any(s <= t["start"] < e or t["start"] <= s < t["end"] for t in flagged)
        assert sum(bool(t["flag"]) for t in r["tokens"]) == 0 or r["spans"]
    settings = json.loads((tmp_path / "det.jsonl.meta.json").read_text())["settings"]
    assert settings["tau"] == 0.10 and settings["teacher"] == models["teacher"]


def test_resume_after_a_crash_gives_the_same_file(models, data, tmp_path, monkeypatch):
    whole = tmp_path / "whole.jsonl"
    _run(models, data, whole, batch_size=2)

    resumed = tmp_path / "resumed.jsonl"
    real = scoring.embedding_saliency
    calls = {"n": 0}

    def crash_on_fifth_call(*args, **kwargs):  # teacher+student per batch: dies in batch 3
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "embedding_saliency", crash_on_fifth_call)
    with pytest.raises(KeyboardInterrupt):
        _run(models, data, resumed, batch_size=2)
    monkeypatch.setattr(scoring, "embedding_saliency", real)
    assert len(read_jsonl(resumed)) == 4  # two whole batches survived
    with resumed.open("a") as fh:  # and a torn line, as if the crash hit mid-write
        fh.write('{"id": 99, "tok')
    summary = _run(models, data, resumed, batch_size=2)
    assert summary.resumed == 4 and summary.written == 3
    assert resumed.read_bytes() == whole.read_bytes()
    # a second rerun has nothing to do
    assert _run(models, data, resumed, batch_size=2).written == 0


def test_resume_with_other_settings_is_refused(models, data, tmp_path):
    out = tmp_path / "det.jsonl"
    _run(models, data, out, tau=0.1)
    with pytest.raises(ValueError, match="differ in: tau"):
        _run(models, data, out, tau=0.2)
    assert _run(models, data, out, tau=0.2, overwrite=True).written == 7


def test_batched_detection_equals_one_at_a_time(models, data, tmp_path):
    a = {r["id"]: r for r in read_jsonl(_run(models, data, tmp_path / "a.jsonl", batch_size=7).out)}
    b = {r["id"]: r for r in read_jsonl(_run(models, data, tmp_path / "b.jsonl", batch_size=1).out)}
    for sid, rec in a.items():
        for ta, tb in zip(rec["tokens"], b[sid]["tokens"]):
            for key in ("g_teacher", "g_student"):
                assert ta[key] == pytest.approx(tb[key], rel=1e-4)


def test_gradient_checkpointing_gives_the_same_detections(models, data, tmp_path):
    plain = read_jsonl(_run(models, data, tmp_path / "a.jsonl", batch_size=4).out)
    ckpt = read_jsonl(_run(models, data, tmp_path / "b.jsonl", batch_size=4, gradient_checkpointing=True).out)
    assert [r["spans"] for r in plain] == [r["spans"] for r in ckpt]
    for ra, rb in zip(plain, ckpt):
        for ta, tb in zip(ra["tokens"], rb["tokens"]):
            assert ta["flag"] == tb["flag"]
            for key in ("g_teacher", "g_student"):
                assert ta[key] == pytest.approx(tb[key], rel=1e-4)


def test_left_truncation_keeps_offsets_in_the_original_instruction(models, data, tmp_path):
    out = tmp_path / "trunc.jsonl"
    summary = _run(models, data, out, max_length=40, truncation="left")
    by_id = {s["id"]: s for s in SAMPLES}
    recs = read_jsonl(out)
    assert any(r["truncated"] > 0 for r in recs)
    for r in recs:
        instruction = by_id[r["id"]]["instruction"]
        assert r["tokens"][0]["start"] >= r["truncated"]
        for t in r["tokens"]:
            assert instruction[t["start"]:t["end"]] == t["text"]
    skipped = {sid for sid, _ in summary.skipped}
    assert skipped | {r["id"] for r in recs} == set(by_id)


def test_skip_policy_logs_reasons(models, data, tmp_path):
    out = tmp_path / "skip.jsonl"
    summary = _run(models, data, out, max_length=40, truncation="skip")
    assert summary.skipped and all("max_length 40" in reason for _, reason in summary.skipped)
    side = read_jsonl(tmp_path / "skip.jsonl.skipped.jsonl")
    assert [r["id"] for r in side] == [sid for sid, _ in summary.skipped]
    assert len(read_jsonl(out)) + len(side) == len(SAMPLES)


def test_select_student_wrong_and_percentile(models, data, tmp_path):
    out = tmp_path / "sel.jsonl"
    _run(models, data, out, select="student-wrong", percentile=10.0)
    recs = read_jsonl(out)
    assert sorted(r["id"] for r in recs) == [0, 2, 4, 6]
    for r in recs:
        scores = [t["score"] for t in r["tokens"] if t["text"].strip()]
        n_flag = sum(t["flag"] for t in r["tokens"])
        assert 1 <= n_flag <= max(1, int(0.1 * len(scores)) + 1)


def test_teacher_with_another_tokenizer(models, data, tmp_path):
    out = tmp_path / "cross.jsonl"
    detect(teacher=models["qwen_teacher"], student=models["student"], data=data, out=out, progress=False)
    same = read_jsonl(_run(models, data, tmp_path / "same.jsonl").out)
    recs = read_jsonl(out)
    for r, s in zip(sorted(recs, key=lambda r: r["id"]), sorted(same, key=lambda r: r["id"])):
        # output speaks in the student's tokens either way
        assert [(t["start"], t["end"]) for t in r["tokens"]] == [(t["start"], t["end"]) for t in s["tokens"]]
        assert all(t["g_teacher"] >= 0 for t in r["tokens"])


def test_bad_input_fails_before_loading_any_model(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "instruction": "Q", "response": "A"}\n{"id": 1, "instruction": "", "response": 3}\n')
    code = main(["detect", "--teacher", "/nonexistent/t", "--student", "/nonexistent/s", "--data", str(bad),
                 "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{bad}:2: field 'instruction': is empty" in err
    assert f"{bad}:2: field 'response': must be a string, got int" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_config_file_and_flag_override(models, data, tmp_path, capsys):
    cfg = tmp_path / "detect.yaml"
    cfg.write_text(
        f"teacher: {models['teacher']}\nstudent: {models['student']}\ndata: {data}\n"
        f"out: {tmp_path / 'c.jsonl'}\ntau: 0.3\nbatch-size: 4\nprogress: false\n"
    )
    assert main(["detect", "--config", str(cfg), "--tau", "0.2"]) == 0
    settings = json.loads((tmp_path / "c.jsonl.meta.json").read_text())["settings"]
    assert settings["tau"] == 0.2 and settings["batch_size"] == 4
    cfg.write_text("teacher: x\nstudnet: y\n")
    assert main(["detect", "--config", str(cfg)]) == 2
    assert "unknown option 'studnet'" in capsys.readouterr().err


def test_tau_and_percentile_are_exclusive():
    with pytest.raises(ValueError, match="either --tau or --percentile"):
        DetectConfig(teacher="t", student="s", data="d", out="o", tau=0.1, percentile=5).validate()


def test_a_sample_the_template_cannot_render_is_skipped_with_its_reason(models, tmp_path):
    from pathlib import Path

    from leaf.models import load_tokenizer

    # the student's tokenizer gets a reasoning template that drops the think block (as DeepSeek-R1's does)
    student = tmp_path / "r1_student"
    Path(student).mkdir()
    for f in Path(models["student"]).iterdir():
        (student / f.name).write_bytes(f.read_bytes())
    tok = load_tokenizer(models["student"])
    tok.chat_template = (
        "{% for m in messages %}{% if m.role == 'user' %}<|start_header_id|>user<|end_header_id|>{{ m.content }}"
        "{% else %}{% set c = m.content %}{% if '</think>' in c %}{% set c = c.split('</think>')[-1] %}{% endif %}"
        "<|start_header_id|>assistant<|end_header_id|>{{ c }}<|eot_id|>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>{% endif %}"
    )
    tok.save_pretrained(student)
    data = tmp_path / "think.jsonl"
    rows = [dict(SAMPLES[0], id="plain"), dict(SAMPLES[4], id="think", response="6 sevens.</think>The answer is 42.")]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "think_out.jsonl"
    summary = detect(teacher=models["teacher"], student=str(student), data=data, out=out, progress=False,
                     render="template")
    assert [sid for sid, _ in summary.skipped] == ["think"] and summary.written == 1
    side = read_jsonl(tmp_path / "think_out.jsonl.skipped.jsonl")
    assert side[0]["id"] == "think" and side[0]["reason"].startswith("student: ") and "rewrites" in side[0]["reason"]
    # auto (the default): the think sample is rendered prompt-then-response and scored
    auto = detect(teacher=models["teacher"], student=str(student), data=data, out=tmp_path / "auto.jsonl",
                  progress=False)
    assert not auto.skipped and auto.written == 2
    assert not (tmp_path / "auto.jsonl.skipped.jsonl").exists()
    # resuming under another render mode is refused (the setting is in the sidecar unless auto)
    with pytest.raises(Exception, match="render"):
        detect(teacher=models["teacher"], student=str(student), data=data, out=out, progress=False)


def test_a_tokenizer_whose_offsets_miss_the_text_stops_the_run(models, data, tmp_path, capsys):
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers import models as tk_models
    from transformers import PreTrainedTokenizerFast

    from leaf.config import ConfigError
    from leaf.models import TokenizerOffsetsError

    # a sentencepiece-style (Metaspace) tokenizer saved beside a qwen2 model: transformers
    # loads it as Qwen2Tokenizer, a byte-level class, and the offsets go wrong
    tk = Tokenizer(tk_models.BPE())
    tk.pre_tokenizer, tk.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    tk.train_from_iterator([s["instruction"] for s in SAMPLES] * 2,
                           trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"], show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>")
    folder = tmp_path / "custom_qwen2"
    build_model(tok, arch="qwen2", hidden_size=16, num_layers=1, num_heads=2).save_pretrained(folder)
    tok.save_pretrained(folder)
    capsys.readouterr()  # drop the progress bar of save_pretrained
    with pytest.raises(TokenizerOffsetsError) as err:
        detect(teacher=models["teacher"], student=str(folder), data=data, out=tmp_path / "o.jsonl", progress=False)
    assert isinstance(err.value, ConfigError)
    assert str(folder) in str(err.value) and "Qwen2Tokenizer" in str(err.value)
    code = main(["detect", "--teacher", models["teacher"], "--student", str(folder), "--data", str(data),
                 "--out", str(tmp_path / "o.jsonl")])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Qwen2Tokenizer" in lines[0]
    assert not (tmp_path / "o.jsonl").exists()


def test_token_budget_and_out_of_memory_batches_give_the_same_detections(models, data, tmp_path, monkeypatch):
    from leaf.detect.scoring import DetectionScorer

    plain = read_jsonl(_run(models, data, tmp_path / "a.jsonl", batch_size=8).out)
    budget = read_jsonl(_run(models, data, tmp_path / "b.jsonl", batch_size=8, max_tokens_per_batch=200).out)
    real = DetectionScorer.score_batch
    sizes = []

    def small_memory(self, batch):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB (injected)")
        return real(self, batch)

    monkeypatch.setattr(DetectionScorer, "score_batch", small_memory)
    halved = read_jsonl(_run(models, data, tmp_path / "c.jsonl", batch_size=8).out)
    assert max(sizes) > 2 and sizes.count(max(sizes)) >= 1 and min(sizes) <= 2
    for other in (budget, halved):
        by_id = {r["id"]: r for r in other}
        assert set(by_id) == {r["id"] for r in plain}
        for rec in plain:
            assert [t["flag"] for t in rec["tokens"]] == [t["flag"] for t in by_id[rec["id"]]["tokens"]]
            for ta, tb in zip(rec["tokens"], by_id[rec["id"]]["tokens"]):
                assert ta["g_student"] == pytest.approx(tb["g_student"], rel=1e-4)


@pytest.mark.parametrize("method, attention", [("gradient", None), ("ppl", "eager")])
def test_packed_detection_equals_padded(models, data, tmp_path, method, attention):
    kw = dict(batch_size=4, method=method, attention=attention)
    padded = read_jsonl(_run(models, data, tmp_path / "a.jsonl", packing="off", **kw).out)
    packed = read_jsonl(_run(models, data, tmp_path / "b.jsonl", packing="on", **kw).out)
    assert [r["spans"] for r in padded] == [r["spans"] for r in packed]
    for ra, rb in zip(padded, packed):
        assert rb["loss_student"] == pytest.approx(ra["loss_student"], rel=1e-5)
        assert [t["flag"] for t in ra["tokens"]] == [t["flag"] for t in rb["tokens"]]
        for ta, tb in zip(ra["tokens"], rb["tokens"]):
            for key in ("g_teacher", "g_student"):
                assert tb[key] == pytest.approx(ta[key], rel=1e-5, abs=1e-7)
