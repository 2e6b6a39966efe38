"""End-to-end distillation runs on tiny models: loss value, accumulation, resume, outputs, CLI."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from leaf.cli import main
from pathlib import Path

from leaf.config import ConfigError
from leaf.data.jsonl import SettingsMismatch
from leaf.distill import distill
from leaf.distill.data import load_examples
from leaf.distill.losses import forward_kl
from leaf.distill.config import DistillConfig
from leaf.models import load_model, load_tokenizer


def _metrics(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _run(setup, out, **kw):
    base = dict(
        student=str(setup / "student"), teacher=str(setup / "teacher"), data=setup / "d.jsonl",
        counterfactuals=setup / "cf.jsonl", out=out, save_steps=1000,
    )
    base.update(kw)
    return distill(**base).out


def _independent_first_step_loss(setup, lam, temperature):
    """lam * mean KL over original loss tokens + (1 - lam) * mean over counterfactual ones, one example at a time."""
    tok = load_tokenizer(str(setup / "student"))
    teacher = load_model(str(setup / "teacher"))
    student = load_model(str(setup / "student"))
    sums = {False: [0.0, 0], True: [0.0, 0]}
    for ex in load_examples(tok, setup / "d.jsonl", setup / "cf.jsonl"):
        ids = torch.tensor([ex.input_ids])
        with torch.no_grad():
            kl = forward_kl(teacher(ids).logits[0, :-1], student(ids).logits[0, :-1], temperature)
        mask = torch.tensor(ex.labels[1:]) != -100
        sums[ex.counterfactual][0] += kl[mask].sum().item()
        sums[ex.counterfactual][1] += int(mask.sum())
    kd = sums[False][0] / sums[False][1]
    cd = sums[True][0] / sums[True][1]
    return lam * kd + (1 - lam) * cd, kd, cd


def test_first_step_loss_matches_independent_computation_and_outputs(distill_setup, tmp_path):
    out = _run(distill_setup, tmp_path / "run", lam=0.3, temperature=2.0, batch_size=12, grad_accum=1, max_steps=1, kl_chunk_size=7)
    expected, kd, cd = _independent_first_step_loss(distill_setup, 0.3, 2.0)
    (row,) = _metrics(out)
    assert row["loss"] == pytest.approx(expected, rel=1e-4)
    assert row["kd_loss"] == pytest.approx(kd, rel=1e-4)
    assert row["cd_loss"] == pytest.approx(cd, rel=1e-4)
    assert set(row) >= {"step", "epoch", "loss", "kd_loss", "cd_loss", "lr", "tokens_per_s"}
    assert row["step"] == 1 and row["tokens_per_s"] > 0
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("step,epoch,loss,kd_loss,cd_loss")
    cfg = json.loads((out / "leaf_config.json").read_text())
    assert cfg["lam"] == 0.3 and cfg["_run"]["examples"] == 12 and cfg["_run"]["counterfactual_examples"] == 4
    # the final student loads with from_pretrained, with its tokenizer
    assert (out / "model.safetensors").exists()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).get_vocab() == load_tokenizer(str(distill_setup / "student")).get_vocab()


def test_plain_kd_without_counterfactuals(distill_setup, tmp_path):
    out = _run(distill_setup, tmp_path / "kd", counterfactuals=None, batch_size=8, max_steps=1, grad_accum=1)
    (row,) = _metrics(out)
    assert row["cd_loss"] == 0.0
    # default lambda 0.5, but with no counterfactuals the KD term gets all the weight
    assert row["loss"] == pytest.approx(row["kd_loss"], rel=1e-6)
    assert json.loads((out / "leaf_config.json").read_text())["_run"]["lambda_used"] == 1.0
    lam1 = _run(distill_setup, tmp_path / "kd1", counterfactuals=None, lam=1.0, batch_size=8, max_steps=1, grad_accum=1)
    assert _metrics(lam1)[0]["loss"] == pytest.approx(row["loss"], rel=1e-6)


def _weights(out):
    return load_file(str(out / "model.safetensors"))


@pytest.mark.parametrize("chunked_head", ["auto", "always"])
def test_gradient_accumulation_1x4_equals_4x1(distill_setup, tmp_path, chunked_head):
    common = dict(max_steps=1, optim="sgd", learning_rate=0.5, lr_scheduler="constant", warmup_steps=0, max_grad_norm=0.0, alpha=0.5,
                  chunked_head=chunked_head)
    a = _weights(_run(distill_setup, tmp_path / "a", batch_size=4, grad_accum=1, **common))
    b = _weights(_run(distill_setup, tmp_path / "b", batch_size=1, grad_accum=4, **common))
    start = load_file(str(distill_setup / "student" / "model.safetensors"))
    moved = max((a[k] - start[k]).abs().max().item() for k in a)
    assert moved > 1e-4  # the step did change the weights
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_resumed_run_reaches_same_weights(distill_setup, tmp_path):
    common = dict(max_steps=4, save_steps=2, batch_size=2, grad_accum=1, learning_rate=1e-2, warmup_steps=1)
    full = _run(distill_setup, tmp_path / "full", **common)
    part = tmp_path / "part"
    part.mkdir()
    shutil.copytree(full / "checkpoint-2", part / "checkpoint-2")  # as if the run died after step 2
    shutil.copy(full / "leaf_config.json", part / "leaf_config.json")  # written before training starts
    # the resume rule of every stage: other settings are refused, naming them; the same settings resume
    with pytest.raises(SettingsMismatch, match="learning_rate"):
        _run(distill_setup, part, **{**common, "learning_rate": 5e-3})
    resumed = _run(distill_setup, part, **common)
    a, b = _weights(full), _weights(resumed)
    start = load_file(str(distill_setup / "student" / "model.safetensors"))
    assert max((a[k] - start[k]).abs().max().item() for k in a) > 1e-3
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert [r["step"] for r in _metrics(resumed)] == [3, 4]
    for key in ("loss", "kd_loss", "cd_loss"):  # the first resumed row is a mean over its own steps only
        assert [r[key] for r in _metrics(resumed)] == pytest.approx([r[key] for r in _metrics(full)][2:], rel=1e-5)


def test_cli_yaml_with_flag_override(distill_setup, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"student: {distill_setup / 'student'}\nteacher: {distill_setup / 'teacher'}\n"
        f"data: {distill_setup / 'd.jsonl'}\noutput_dir: {tmp_path / 'cli'}\nlam: 0.2\nmax_steps: 1\n"
        "per_device_batch_size: 8\ngrad_accum: 1\n"
    )
    assert main(["distill", "--config", str(cfg), "--lambda", "1.0", "--temperature", "3"]) == 0
    saved = json.loads((tmp_path / "cli" / "leaf_config.json").read_text())
    assert saved["lam"] == 1.0 and saved["temperature"] == 3.0 and saved["max_steps"] == 1
    assert main(["distill", "--config", str(cfg), "--lambda", "1.5"]) == 2  # validated, clear error


def test_config_validation():
    with pytest.raises(ConfigError, match="teacher"):
        DistillConfig(student="s", out="o", data="d").validate()
    # Trainer / TRL names are aliases of leaf's, in YAML and keyword arguments alike
    from leaf.config import build

    cfg = build(DistillConfig, {"student": "s", "teacher": "t", "data": "d", "output_dir": "o",
                                "per_device_train_batch_size": 3, "num_train_epochs": 2,
                                "gradient_accumulation_steps": 5, "lr_scheduler_type": "linear"})
    assert (cfg.out, cfg.batch_size, cfg.epochs, cfg.grad_accum, cfg.lr_scheduler) == (Path("o"), 3, 2.0, 5, "linear")
    with pytest.raises(ConfigError, match="unknown option 'per_device_eval_batch_size'"):
        build(DistillConfig, {"student": "s", "teacher": "t", "data": "d", "out": "o", "per_device_eval_batch_size": 3})


def test_lora_run_saves_merged_model(distill_setup, tmp_path):
    out = _run(distill_setup, tmp_path / "lora", lora_r=4, max_steps=1, batch_size=4, grad_accum=1, learning_rate=1e-2)
    w = _weights(out)
    assert not any("lora" in k for k in w)
    start = load_file(str(distill_setup / "student" / "model.safetensors"))
    assert set(w) == set(start)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_cpu_run_matches_one_process(distill_setup, tmp_path):
    """``accelerate launch`` with 2 CPU processes (torchrun launcher, gloo): same first-step loss as 1 process x 2 batch."""
    import os
    import subprocess
    import sys

    args = [
        "-m", "leaf", "distill", "--student", str(distill_setup / "student"), "--teacher", str(distill_setup / "teacher"),
        "--data", str(distill_setup / "d.jsonl"), "--counterfactuals", str(distill_setup / "cf.jsonl"),
        "--grad-accum", "1", "--max-steps", "2", "--save-steps", "1000",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
    ]
    ddp = tmp_path / "ddp"
    proc = subprocess.run([*launch, *args, "--output-dir", str(ddp), "--per-device-batch-size", "2"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_info = json.loads((ddp / "leaf_config.json").read_text())["_run"]
    assert run_info["processes"] == 2 and run_info["backend"] == "gloo" and run_info["distributed_type"] == "MULTI_CPU"
    one = _run(distill_setup, tmp_path / "one", batch_size=4, grad_accum=1, max_steps=2)
    m2, m1 = _metrics(ddp), _metrics(one)
    assert len(m2) == 2
    for key in ("loss", "kd_loss", "cd_loss", "grad_norm"):
        assert m2[0][key] == pytest.approx(m1[0][key], rel=1e-5)
    # the whole 2-step update agrees too
    a, b = _weights(ddp), _weights(one)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)


def test_selected_rows_path_equals_full_logits_path(distill_setup, tmp_path):
    """logits_to_keep (only loss positions through the LM head) gives the same loss as full logits."""
    from leaf.distill.run import build_trainer

    cfg = DistillConfig(
        student=str(distill_setup / "student"), teacher=str(distill_setup / "teacher"), data=distill_setup / "d.jsonl",
        counterfactuals=distill_setup / "cf.jsonl", out=tmp_path / "x", lam=0.4, alpha=0.3, temperature=1.5,
    )
    trainer = build_trainer(cfg)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(12)])
    selected = trainer.compute_loss(trainer.model, dict(batch)).item()
    assert trainer._keep_ok is True
    trainer._keep_ok = False
    full = trainer.compute_loss(trainer.model, dict(batch)).item()
    assert selected == pytest.approx(full, rel=1e-5)


def test_cli_refuses_teacher_with_other_tokenizer(distill_setup, tmp_path, capsys):
    from leaf.tiny import build_model, build_tokenizer

    tok = build_tokenizer(style="chatml")
    build_model(tok, hidden_size=16, num_layers=1).save_pretrained(tmp_path / "other")
    tok.save_pretrained(tmp_path / "other")
    rc = main([
        "distill", "--student", str(distill_setup / "student"), "--teacher", str(tmp_path / "other"),
        "--data", str(distill_setup / "d.jsonl"), "--output-dir", str(tmp_path / "out"),
    ])
    assert rc == 2
    assert "tokenizers differ" in capsys.readouterr().err
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_every_step_mixes_originals_and_counterfactuals(distill_setup, tmp_path):
    # 8 originals + 4 counterfactuals, steps of 3 examples: the interleaved order gives each step one counterfactual
    out = _run(distill_setup, tmp_path / "mix", batch_size=3, grad_accum=1, epochs=2)
    rows = _metrics(out)
    assert len(rows) == 8
    assert all(r["kd_loss"] > 0 and r["cd_loss"] > 0 for r in rows)
    from leaf.distill.data import InterleavedSampler
    from leaf.distill.run import build_trainer

    cfg = dict(student=str(distill_setup / "student"), teacher=str(distill_setup / "teacher"), data=distill_setup / "d.jsonl",
               counterfactuals=distill_setup / "cf.jsonl")
    assert isinstance(build_trainer(DistillConfig(**cfg, out=tmp_path / "a"))._get_train_sampler(), InterleavedSampler)
    assert not isinstance(build_trainer(DistillConfig(**cfg, out=tmp_path / "b", mix="shuffle"))._get_train_sampler(), InterleavedSampler)


# ----------------------------------------------------------------------------
# Chunked output heads in the trainer: equal to the full-logit path, never (N, V) logits.
# ----------------------------------------------------------------------------


def _loss_and_grads(trainer, batch):
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.item(), grads


def _use_full_logits(trainer):
    """Switch the trainer to its full-logit path (the implementation before chunked heads)."""
    trainer._chunked_head = (trainer.accelerator.unwrap_model(trainer.model), None)
    trainer._teacher_chunked_head = (None,)


def _logit_rows(*modules):
    """Rows of every output-head call that computed logits (the hidden-state capture computes none)."""
    seen = []

    def hook(module, args, out):
        if out.shape[-1] > 0:
            seen.append(args[0].reshape(-1, args[0].shape[-1]).shape[0])

    return seen, [m.register_forward_hook(hook) for m in modules]


@pytest.mark.parametrize("temperature, alpha", [(1.0, 0.0), (1.5, 0.3)])
@pytest.mark.parametrize("hook_student", [False, True])
def test_chunked_head_loss_and_gradients_equal_full_logit_path(distill_setup, tmp_path, temperature, alpha, hook_student):
    """Fused path (plain linear student head: each chunk projected once, gradients in the forward pass) and, with
    a forward hook on the student's head, the checkpointed path (recomputed in backward) equal the full logits."""
    from leaf.distill.losses import _linear_head
    from leaf.distill.run import build_trainer

    cfg = DistillConfig(
        student=str(distill_setup / "student"), teacher=str(distill_setup / "teacher"), data=distill_setup / "d.jsonl",
        counterfactuals=distill_setup / "cf.jsonl", out=tmp_path / "x", lam=0.4, alpha=alpha,
        temperature=temperature, kl_chunk_size=5, chunked_head="always",
    )
    trainer = build_trainer(cfg)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(12)])
    n_loss = int((batch["labels"][:, 1:] != -100).sum())
    trainer._student_head(trainer.model), trainer._teacher_head()  # their one-time checks are not counted
    seen, hooks = _logit_rows(*((trainer.model.lm_head,) if hook_student else ()), trainer.teacher.lm_head)
    try:
        loss, grads = _loss_and_grads(trainer, batch)
        fused = _linear_head(trainer._chunked_head[1]) is not None
    finally:
        for h in hooks:
            h.remove()
    assert trainer._chunked_head[1] is not None and trainer._keep_ok is True
    assert max(seen) <= 5  # never more than one chunk of logits, student or teacher
    if hook_student:  # checkpointed: student forward + recompute, teacher forward + recompute
        assert not fused and sum(seen) == 2 * n_loss + 2 * n_loss
    else:  # fused: the teacher's logits once per chunk (the student's head is applied by F.linear, unhooked)
        assert fused and sum(seen) == n_loss
    _use_full_logits(trainer)
    want, want_grads = _loss_and_grads(trainer, batch)
    assert loss == pytest.approx(want, rel=1e-5)
    assert set(grads) == set(want_grads) and len(grads) > 0
    for name in grads:
        torch.testing.assert_close(grads[name], want_grads[name], rtol=1e-5, atol=1e-7)


def test_chunked_head_with_topk_cache_equals_full_logit_path(distill_setup, tmp_path):
    from leaf.distill.cache import CacheConfig, build_cache
    from leaf.distill.run import build_trainer

    cache = build_cache(CacheConfig(
        teacher=str(distill_setup / "teacher"), tokenizer=str(distill_setup / "student"), data=distill_setup / "d.jsonl",
        counterfactuals=distill_setup / "cf.jsonl", out=tmp_path / "cache", top_k=16, temperature=2.0,
    )).out
    cfg = DistillConfig(
        student=str(distill_setup / "student"), teacher_cache=cache, data=distill_setup / "d.jsonl",
        counterfactuals=distill_setup / "cf.jsonl", out=tmp_path / "x", lam=0.3, alpha=0.2, temperature=2.0,
        kl_chunk_size=4, chunked_head="always",
    )
    trainer = build_trainer(cfg)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(12)])
    loss, grads = _loss_and_grads(trainer, batch)
    assert trainer._chunked_head[1] is not None
    _use_full_logits(trainer)
    want, want_grads = _loss_and_grads(trainer, batch)
    assert loss == pytest.approx(want, rel=1e-5)
    for name in grads:
        torch.testing.assert_close(grads[name], want_grads[name], rtol=1e-5, atol=1e-7)


def test_cli_is_quiet_by_default_and_verbose_on_request(distill_setup, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LEAF_VERBOSE", raising=False)
    argv = ["distill", "--student", str(distill_setup / "student"), "--teacher", str(distill_setup / "teacher"),
            "--data", str(distill_setup / "d.jsonl"), "--max-steps", "2", "--batch-size", "4", "--grad-accum", "1"]
    assert main([*argv, "--out", str(tmp_path / "quiet")]) == 0
    quiet = capsys.readouterr()
    assert "'loss'" not in quiet.out + quiet.err and "Loading weights" not in quiet.err
    assert "trained 2 steps" in quiet.out
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # what the quiet run turned off, as a fresh `leaf -v` process has it
    hf_logging.set_verbosity_warning()
    assert main(["-v", *argv, "--out", str(tmp_path / "loud")]) == 0
    loud = capsys.readouterr()
    assert "'loss'" in loud.out + loud.err


def test_several_trackers_and_a_missing_one_is_one_line(distill_setup, tmp_path, capsys, monkeypatch):
    import importlib.util

    from leaf.config import build

    cfg = build(DistillConfig, {"student": "s", "teacher": "t", "data": "d", "out": "o",
                                "report_to": ["tensorboard", "wandb"]})
    assert cfg.report_to == ["tensorboard", "wandb"]
    with pytest.raises(ConfigError, match="'none' cannot be combined"):
        build(DistillConfig, {"student": "s", "teacher": "t", "data": "d", "out": "o", "report_to": ["none", "wandb"]})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert main(["distill", "--student", str(distill_setup / "student"), "--teacher", str(distill_setup / "teacher"),
                 "--data", str(distill_setup / "d.jsonl"), "--out", str(tmp_path / "x"), "--report-to", "wandb"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs the wandb package(s): pip install wandb" in err


def test_auto_chunks_the_heads_only_when_the_logits_would_be_large(distill_setup, tmp_path, monkeypatch):
    import leaf.distill.trainer as trainer_module
    from leaf.distill.run import build_trainer

    cfg = DistillConfig(student=str(distill_setup / "student"), teacher=str(distill_setup / "teacher"),
                        data=distill_setup / "d.jsonl", out=tmp_path / "x")
    trainer = build_trainer(cfg)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    seen, hooks = _logit_rows(trainer.model.lm_head)
    try:
        _loss_and_grads(trainer, batch)  # tiny logits: the full-logit path (one head call of all rows)
        assert len(seen) == 1 and getattr(trainer, "_chunked_head", None) is None
        seen.clear()
        monkeypatch.setattr(trainer_module, "CHUNKED_HEAD_BYTES", 0)  # as if the vocabulary were huge
        _loss_and_grads(trainer, batch)
        assert trainer._chunked_head[1] is not None and len(seen) > 1
    finally:
        for h in hooks:
            h.remove()
