"""Evaluation on held-out samples during training, the model card, and --push-to-hub (HfApi patched: no network)."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch

from leaf.cli import main
from leaf.data.records import DataError
from leaf.distill import DistillConfig, distill
from leaf.distill.data import load_examples
from leaf.distill.losses import forward_kl
from leaf.distill.run import build_trainer
from leaf.models import load_model, load_tokenizer
from leaf.tiny import DEFAULT_CORPUS


def _base(setup, out, **kw):
    base = {"student": str(setup / "student"), "teacher": str(setup / "teacher"), "data": setup / "d.jsonl",
            "counterfactuals": setup / "cf.jsonl", "out": out, "save_steps": 1000, "batch_size": 4, "grad_accum": 1}
    base.update(kw)
    return base


def _independent_loss(student_dir, teacher_dir, examples, lam, temperature):
    """lam x mean KL over original loss tokens + (1 - lam) x mean over counterfactual ones, one example at a time."""
    teacher, student = load_model(str(teacher_dir)), load_model(str(student_dir))
    sums = {False: [0.0, 0], True: [0.0, 0]}
    for ex in examples:
        ids = torch.tensor([ex.input_ids])
        with torch.no_grad():
            kl = forward_kl(teacher(ids).logits[0, :-1], student(ids).logits[0, :-1], temperature)
        mask = torch.tensor(ex.labels[1:]) != -100
        sums[ex.counterfactual][0] += kl[mask].sum().item()
        sums[ex.counterfactual][1] += int(mask.sum())
    kd = sums[False][0] / sums[False][1] if sums[False][1] else None
    cd = sums[True][0] / sums[True][1] if sums[True][1] else None
    if kd is not None and cd is not None:
        return lam * kd + (1 - lam) * cd, kd, cd
    return (kd if kd is not None else cd), kd, cd


def test_eval_split_is_held_out_deterministically_and_never_trained_on(distill_setup, tmp_path):
    cfg = DistillConfig(**_base(distill_setup, tmp_path / "b", eval_split=0.25, seed=3))
    trainer = build_trainer(cfg)
    tok = load_tokenizer(str(distill_setup / "student"))
    every = load_examples(tok, distill_setup / "d.jsonl", distill_setup / "cf.jsonl")
    # 8 sources (ids 0..7; counterfactuals i-0 belong to source i): round(0.25 x 8) = 2 drawn by the seed
    expected = set(random.Random(3).sample(sorted({str(i) for i in range(8)}), 2))
    held = json.loads((tmp_path / "b" / "eval_heldout.json").read_text())
    assert set(held["sources"]) == expected
    held_keys = {f"orig:{s}" for s in expected} | {f"cf:{s}-0" for s in expected if int(s) < 4}
    assert set(held["examples"]) == held_keys
    assert {e.key for e in trainer.eval_dataset.examples} == held_keys
    # what the training loop draws: every batch of an epoch, none of them held out
    drawn = [every[i].key for batch in trainer.get_train_dataloader() for i in batch["index"].tolist()]
    assert sorted(drawn) == sorted(e.key for e in every if e.key not in held_keys)
    run = json.loads((tmp_path / "b" / "leaf_config.json").read_text())["_run"]
    assert run["examples"] == 12 - len(held_keys) and run["eval_examples"] == len(held_keys)
    assert run["counterfactual_examples"] == 4 - sum(k.startswith("cf:") for k in held_keys)
    # the same seed holds out the same samples; the split is by source, so no counterfactual of a held-out
    # sample is trained on
    again = build_trainer(DistillConfig(**_base(distill_setup, tmp_path / "c", eval_split=0.25, seed=3)))
    assert [e.key for e in again.eval_dataset.examples] == [e.key for e in trainer.eval_dataset.examples]


def test_eval_loss_equals_independent_computation(distill_setup, tmp_path):
    out = tmp_path / "run"
    summary = distill(**_base(distill_setup, out, eval_split=0.25, seed=3, lam=0.3, temperature=2.0, max_steps=3,
                              eval_steps=2, learning_rate=1e-2, eval_batch_size=3))
    rows = [json.loads(x) for x in (out / "eval_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3]  # every --eval-steps, and once at the end
    held = json.loads((out / "eval_heldout.json").read_text())["examples"]
    tok = load_tokenizer(str(out))
    examples = [e for e in load_examples(tok, distill_setup / "d.jsonl", distill_setup / "cf.jsonl") if e.key in held]
    assert any(e.counterfactual for e in examples) and not all(e.counterfactual for e in examples)
    loss, kd, cd = _independent_loss(out, distill_setup / "teacher", examples, 0.3, 2.0)  # the final weights
    final = rows[-1]
    assert final["eval_loss"] == pytest.approx(loss, rel=1e-4)
    assert final["eval_kd_loss"] == pytest.approx(kd, rel=1e-4)
    assert final["eval_cd_loss"] == pytest.approx(cd, rel=1e-4)
    assert final["eval_examples"] == len(examples)
    assert final["eval_loss_tokens"] == sum(e.n_loss_tokens for e in examples)
    assert rows[0]["eval_loss"] != pytest.approx(final["eval_loss"], rel=1e-6)  # training moved the weights
    # the Trainer's own records: trainer_state.json, eval_results.json; the summary line
    state = json.loads((out / "trainer_state.json").read_text())
    assert [e["eval_loss"] for e in state["log_history"] if "eval_loss" in e] == [r["eval_loss"] for r in rows]
    assert json.loads((out / "eval_results.json").read_text())["eval_loss"] == final["eval_loss"]
    assert summary.eval_loss == final["eval_loss"]
    # training metrics are not mixed with evaluation ones
    assert all("eval_loss" not in json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines())


def test_eval_data_as_dataset_reference_through_the_cli(distill_setup, tmp_path):
    raw = tmp_path / "held.jsonl"
    raw.write_text("".join(json.dumps({"key": f"h{i}", "q": DEFAULT_CORPUS[i][::-1], "a": DEFAULT_CORPUS[i + 1][:30]})
                           + "\n" for i in range(3)))
    ref = f"hf:{raw}@train[:2]#id=key,instruction=q,response=a"
    out = tmp_path / "cli"
    assert main(["distill", "--student", str(distill_setup / "student"), "--teacher", str(distill_setup / "teacher"),
                 "--data", str(distill_setup / "d.jsonl"), "--out", str(out), "--max-steps", "1", "--batch-size", "8",
                 "--grad-accum", "1", "--eval-data", ref, "--eval-steps", "1", "--lambda", "0.5"]) == 0
    (row,) = [json.loads(x) for x in (out / "eval_metrics.jsonl").read_text().splitlines()]
    tok = load_tokenizer(str(out))
    examples = load_examples(tok, ref)
    assert [e.key for e in examples] == ["orig:h0", "orig:h1"]
    loss, kd, cd = _independent_loss(out, distill_setup / "teacher", examples, 0.5, 1.0)
    assert cd is None and "eval_cd_loss" not in row  # originals only: L_kd is the loss
    assert row["eval_loss"] == pytest.approx(loss, rel=1e-4) and row["eval_kd_loss"] == pytest.approx(kd, rel=1e-4)


def test_eval_data_that_is_training_data_is_refused(distill_setup, tmp_path):
    with pytest.raises(DataError, match=r"8 evaluation example\(s\) are also training examples"):
        build_trainer(DistillConfig(**_base(distill_setup, tmp_path / "x", eval_data=distill_setup / "d.jsonl")))
    with pytest.raises(DataError, match="needs at least 2 source samples"):
        one = tmp_path / "one.jsonl"
        one.write_text(json.dumps({"id": 1, "instruction": "Q?", "response": "An answer."}) + "\n")
        build_trainer(DistillConfig(**_base(distill_setup, tmp_path / "y", data=one, counterfactuals=None,
                                             eval_split=0.5)))


class _FakeHub:
    """Records what HfApi would have been asked to do."""

    def __init__(self, monkeypatch):
        from huggingface_hub import HfApi
        from huggingface_hub.utils import filter_repo_objects

        self.calls = []

        def create_repo(api, repo_id, **kw):
            self.calls.append(("create_repo", repo_id, api.token, kw))
            from types import SimpleNamespace

            return SimpleNamespace(repo_id=repo_id if "/" in repo_id else f"someone/{repo_id}")

        def upload_folder(api, *, repo_id, folder_path, ignore_patterns=None, **kw):
            from pathlib import Path

            files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
            self.uploaded = sorted(filter_repo_objects(files, ignore_patterns=ignore_patterns))
            self.calls.append(("upload_folder", repo_id, api.token, {"folder_path": folder_path, **kw}))

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)


def test_push_to_hub_uploads_model_and_card_with_the_runs_settings(distill_setup, tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    from leaf.data.counterfactuals import SCHEMA, SCHEMA_VERSION
    from leaf.data.jsonl import write_sidecar

    data = tmp_path / "data"
    shutil.copytree(distill_setup, data, ignore=shutil.ignore_patterns("teacher", "student"))
    write_sidecar(data / "cf.jsonl", SCHEMA, SCHEMA_VERSION, settings={
        "detection": {"tau": 0.15, "level": "instruction", "method": "gradient", "teacher": "T", "student": "S"},
        "prune": {"strategy": "span", "intervention": "delete", "verify": True}})
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"model": "run", "benchmarks": {
        "gsm8k": {"accuracy": 0.75, "correct": 3, "total": 4, "task": "math"}}}))
    hub = _FakeHub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    out = tmp_path / "tiny-leaf"
    summary = distill(**_base(distill_setup, out, data=data / "d.jsonl", counterfactuals=data / "cf.jsonl",
                              lam=0.3, temperature=2.0, max_steps=2, save_steps=1, batch_size=2, grad_accum=3,
                              learning_rate=3e-4, eval_split=0.25, eval_steps=1, push_to_hub=True,
                              hub_model_id="me/tiny-leaf", hub_private=True, hub_token="hf_SECRET_123",
                              license="apache-2.0", card_results=[results]))
    assert summary.hub_repo == "me/tiny-leaf"
    (create, upload) = hub.calls
    assert create[:3] == ("create_repo", "me/tiny-leaf", "hf_SECRET_123")  # --hub-token wins over HF_TOKEN
    assert create[3]["private"] is True and create[3]["exist_ok"] is True
    assert upload[:3] == ("upload_folder", "me/tiny-leaf", "hf_SECRET_123") and upload[3]["folder_path"] == str(out)
    assert {"model.safetensors", "config.json", "README.md", "tokenizer.json", "leaf_config.json",
            "eval_metrics.jsonl", "trainer_state.json"} <= set(hub.uploaded)
    assert any(p.startswith("checkpoint-") for p in (x.name for x in out.iterdir()))  # checkpoints exist ...
    assert not any(p.startswith("checkpoint-") for p in hub.uploaded)  # ... but stay local
    # the token is written nowhere
    assert not [p for p in out.rglob("*") if p.is_file() and b"hf_SECRET_123" in p.read_bytes()]

    card = ModelCard.load(out / "README.md")
    assert card.data.license == "apache-2.0" and card.data.library_name == "transformers"
    assert {"leaf", "distillation"} <= set(card.data.tags)
    assert card.data.base_model is None  # a local student folder is no Hub id
    text = card.text
    held = json.loads((out / "eval_heldout.json").read_text())["examples"]
    n_cf_held = sum(k.startswith("cf:") for k in held)
    assert f"| original samples (L_kd) | `{data / 'd.jsonl'}` | {8 - (len(held) - n_cf_held)} |" in text
    assert f"| counterfactual samples (L_cd) | `{data / 'cf.jsonl'}` | {4 - n_cf_held} |" in text
    assert "| lambda (weight of L_kd) | 0.3 |" in text and "| temperature T | 2 |" in text
    assert "L = 0.3 x L_kd + 0.7 x L_cd" in text
    assert "| optimiser steps | 2 |" in text and "| learning rate | 0.0003 (cosine, 5 warm-up steps) |" in text
    assert "| effective batch | 6 (batch size 2 x gradient accumulation 3 x 1 processes) |" in text
    assert "| detection threshold tau | 0.15 |" in text and "| intervention | delete |" in text
    assert "| gsm8k | math | 75.00 % | 3 / 4 | results.json |" in text
    evals = [json.loads(x) for x in (out / "eval_metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [1, 2]
    for e in evals:
        assert f"| {e['step']} | {e['epoch']:.6g} | {e['eval_loss']:.6g} | {e['eval_kd_loss']:.6g} |" in text
    assert "lam: 0.3" in text and "eval_split: 0.25" in text and "hub_token" not in text  # how to reproduce


def test_card_front_matter_names_hub_base_model_and_datasets(tmp_path):
    from leaf.distill.card import card_data

    cfg = DistillConfig(student="Qwen/Qwen2.5-0.5B-Instruct", teacher="Qwen/Qwen2.5-7B-Instruct", out=tmp_path / "o",
                        data="hf:AI-MO/NuminaMath-CoT@train[:1000]#instruction=problem,response=solution",
                        eval_data=f"hf:{tmp_path}@test", license="mit")
    data = card_data(cfg)
    assert data.base_model == "Qwen/Qwen2.5-0.5B-Instruct"
    assert data.datasets == ["AI-MO/NuminaMath-CoT"]  # a local dataset folder is no Hub id
    assert data.license == "mit"


def test_card_is_written_without_push_and_a_foreign_readme_is_kept(distill_setup, tmp_path, monkeypatch):
    hub = _FakeHub(monkeypatch)
    out = tmp_path / "run"
    out.mkdir()
    (out / "README.md").write_text("my notes\n")
    distill(**_base(distill_setup, out, max_steps=1, batch_size=12))
    assert hub.calls == []
    assert (out / "README.md").read_text() == "my notes\n"
    text = (out / "README.leaf.md").read_text()
    assert "No evaluation was recorded" in text and "| optimiser steps | 1 |" in text


def test_push_error_is_one_line_naming_the_repository(distill_setup, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from leaf.config import ConfigError
    from leaf.distill.card import push_to_hub

    def refuse(api, repo_id, **kw):
        raise OSError("no network")

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    cfg = DistillConfig(student="s", teacher="t", data=distill_setup / "d.jsonl", out=tmp_path, hub_model_id="me/x")
    with pytest.raises(ConfigError, match=r"cannot create or reach the repository 'me/x' \(OSError: no network\)"):
        push_to_hub(cfg, tmp_path)


def test_two_process_eval_counts_each_held_out_example_once(distill_setup, tmp_path):
    """2 CPU processes, 4 held-out examples in batches of 3 (the sampler pads with repeats): the same exact loss."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(port),
           "-m", "leaf", "distill", "--student", str(distill_setup / "student"),
           "--teacher", str(distill_setup / "teacher"), "--data", str(distill_setup / "d.jsonl"),
           "--counterfactuals", str(distill_setup / "cf.jsonl"), "--grad-accum", "1", "--max-steps", "1",
           "--save-steps", "1000", "--batch-size", "2", "--eval-split", "0.25", "--seed", "3",
           "--eval-batch-size", "3", "--lambda", "0.4", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = [json.loads(x) for x in (out / "eval_metrics.jsonl").read_text().splitlines()]
    held = json.loads((out / "eval_heldout.json").read_text())["examples"]
    tok = load_tokenizer(str(out))
    examples = [e for e in load_examples(tok, distill_setup / "d.jsonl", distill_setup / "cf.jsonl") if e.key in held]
    loss, _kd, cd = _independent_loss(out, distill_setup / "teacher", examples, 0.4, 1.0)
    assert row["eval_examples"] == len(examples) == 3  # 3 held out, over 2 processes x batches of 3: repeats dropped
    assert row["eval_loss"] == pytest.approx(loss, rel=1e-4) and row["eval_cd_loss"] == pytest.approx(cd, rel=1e-4)
