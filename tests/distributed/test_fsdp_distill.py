"""``leaf distill`` under the shipped FSDP config, on 2 CPU processes (gloo), student and teacher sharded by
torch's FSDP2: the loss curve and the weights equal one process at the same effective batch, the checkpoint
resumes to the same result, and the final folder loads with ``from_pretrained``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from leaf.distill import distill
from leaf.tiny import DEFAULT_CORPUS, build_model, build_tokenizer

from .launch import free_port

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "configs" / "accelerate" / "fsdp.yaml"
STEPS = dict(max_steps=4, save_steps=2, learning_rate=1e-2, warmup_steps=1, grad_accum=1)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    tok = build_tokenizer(style="llama3")
    for name, hidden, layers, seed in (("teacher", 32, 2, 0), ("student", 16, 2, 1)):
        build_model(tok, hidden_size=hidden, num_layers=layers, seed=seed).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    with (root / "d.jsonl").open("w") as fh:
        for i in range(8):
            fh.write(json.dumps({"id": i, "instruction": DEFAULT_CORPUS[i % 7],
                                 "response": DEFAULT_CORPUS[(i + 1) % 7][: 20 + 3 * i]}) + "\n")
    with (root / "cf.jsonl").open("w") as fh:
        for i in range(4):
            fh.write(json.dumps({
                "id": f"{i}-0", "source_id": i, "instruction": DEFAULT_CORPUS[i % 7][5:],
                "response": DEFAULT_CORPUS[(i + 1) % 7][: 20 + 3 * i], "loss_start": None, "strategy": "span",
                "level": "instruction", "removed": [], "method": "gradient", "intervention": "delete",
            }) + "\n")
    # the shipped FSDP config, changed only where a 2-process CPU test must differ
    cfg = yaml.safe_load(SHIPPED.read_text())
    cfg.update(num_processes=2, mixed_precision="no", use_cpu=True)
    (root / "fsdp_cpu.yaml").write_text(yaml.safe_dump(cfg))
    return root


def _fsdp(setup: Path, out: Path, teacher: list[str] | None = None, **more: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(setup / "fsdp_cpu.yaml"),
        "--main_process_port", str(free_port()), str(Path(__file__).with_name("fsdp_cpu.py")),
        "distill", "--student", str(setup / "student"), *(teacher or ["--teacher", str(setup / "teacher")]),
        "--data", str(setup / "d.jsonl"), "--counterfactuals", str(setup / "cf.jsonl"),
        "--per-device-batch-size", "2", "--output-dir", str(out),
        *[x for k, v in {**STEPS, **more}.items() for x in (f"--{k.replace('_', '-')}", str(v))],
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(setup, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp-runs")
    sharded = tmp / "fsdp"
    _fsdp(setup, sharded)
    one = distill(student=str(setup / "student"), teacher=str(setup / "teacher"), data=setup / "d.jsonl",
                  counterfactuals=setup / "cf.jsonl", out=tmp / "one", per_device_batch_size=4, **STEPS).out
    return sharded, one, tmp


def test_fsdp_run_is_sharded_and_equals_one_process(runs):
    sharded, one, _ = runs
    run = json.loads((sharded / "leaf_config.json").read_text())["_run"]
    assert run["distributed_type"] == "FSDP" and run["processes"] == 2 and run["backend"] == "gloo"
    assert run["effective_batch"] == 4
    assert (sharded / "checkpoint-2" / "pytorch_model_fsdp.bin").exists()  # written by the FSDP save path only
    a, b = _metrics(sharded), _metrics(one)
    assert [r["step"] for r in a] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for key in ("loss", "kd_loss", "cd_loss", "grad_norm"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4), (ra["step"], key)
    wa, wb = load_file(str(sharded / "model.safetensors")), load_file(str(one / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-6)


def test_fsdp_weights_moved_and_load_with_from_pretrained(runs, setup):
    from transformers import AutoModelForCausalLM

    sharded, _, _ = runs
    model = AutoModelForCausalLM.from_pretrained(sharded)
    start = load_file(str(setup / "student" / "model.safetensors"))
    trained = {k: v for k, v in model.state_dict().items() if k in start}
    assert trained.keys() == start.keys()
    assert max((trained[k] - start[k]).abs().max().item() for k in start) > 1e-3  # 4 steps at lr 1e-2 moved it
    saved = load_file(str(sharded / "model.safetensors"))
    for k in saved:
        torch.testing.assert_close(model.state_dict()[k], saved[k])


def test_fsdp_checkpoint_resumes_to_the_same_result(runs, setup):
    sharded, _, tmp = runs
    part = tmp / "part"
    part.mkdir()
    shutil.copytree(sharded / "checkpoint-2", part / "checkpoint-2")  # as if the run died after step 2
    shutil.copy(sharded / "leaf_config.json", part / "leaf_config.json")
    proc = _fsdp(setup, part)
    assert "(resumed)" in proc.stdout + proc.stderr
    assert [r["step"] for r in _metrics(part)] == [3, 4]
    assert [r["loss"] for r in _metrics(part)] == pytest.approx([r["loss"] for r in _metrics(sharded)][2:], rel=1e-5)
    a, b = load_file(str(sharded / "model.safetensors")), load_file(str(part / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_fsdp_on_policy_generates_in_lockstep_and_equals_one_process(setup, tmp_path):
    """--student-responses under FSDP: every process takes part in every generation (a process with nothing
    drawn generates a row it discards), and greedy answers make the run equal to one process's."""
    on_policy = dict(student_responses=0.5, student_temperature=0.0, student_max_new_tokens=8)
    sharded = tmp_path / "fsdp"
    _fsdp(setup, sharded, **on_policy)
    one = distill(student=str(setup / "student"), teacher=str(setup / "teacher"), data=setup / "d.jsonl",
                  counterfactuals=setup / "cf.jsonl", out=tmp_path / "one", per_device_batch_size=4, **STEPS,
                  **on_policy).out
    a, b = _metrics(sharded), _metrics(one)
    assert [r["step"] for r in a] == [1, 2, 3, 4]
    assert sum(r["student_responses"] for r in b) >= 4  # the draw did replace responses
    for ra, rb in zip(a, b):
        assert ra["student_responses"] == rb["student_responses"]
        for key in ("loss", "kd_loss", "cd_loss"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4), (ra["step"], key)


@pytest.mark.parametrize("source", ["live", "cache"])
def test_fsdp_with_a_teacher_of_another_tokenizer_equals_one_process(setup, tmp_path, source):
    """A ChatML teacher with another vocabulary, live (sharded like the student) or from its cross-tokenizer
    top-k cache: the aligned losses and the weights equal one process's."""
    from leaf.distill.cache import build_cache

    tok = build_tokenizer([c[::-1] for c in DEFAULT_CORPUS] + DEFAULT_CORPUS, style="chatml", vocab_size=400)
    other = tmp_path / "other"
    build_model(tok, hidden_size=32, num_layers=2, seed=3).save_pretrained(other)
    tok.save_pretrained(other)
    if source == "cache":
        cache = build_cache(teacher=str(other), tokenizer=str(setup / "student"), data=setup / "d.jsonl",
                            counterfactuals=setup / "cf.jsonl", out=tmp_path / "cache", cross_tokenizer="auto",
                            top_k=16).out
        teacher: dict = dict(teacher_cache=cache)
        flags = ["--teacher-cache", str(cache)]
    else:
        teacher, flags = dict(teacher=str(other)), ["--teacher", str(other)]
    sharded = tmp_path / "fsdp"
    _fsdp(setup, sharded, teacher=flags, cross_tokenizer="auto")
    one = distill(student=str(setup / "student"), data=setup / "d.jsonl", counterfactuals=setup / "cf.jsonl",
                  out=tmp_path / "one", per_device_batch_size=4, cross_tokenizer="auto", **teacher, **STEPS).out
    a, b = _metrics(sharded), _metrics(one)
    assert [r["step"] for r in a] == [1, 2, 3, 4]
    assert json.loads((sharded / "leaf_config.json").read_text())["_run"]["cross_tokenizer"]["method"] == "gold"
    for ra, rb in zip(a, b):
        for key in ("loss", "kd_loss", "cd_loss", "grad_norm", "aligned_1to1"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4), (ra["step"], key)
    wa, wb = load_file(str(sharded / "model.safetensors")), load_file(str(one / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-6)
