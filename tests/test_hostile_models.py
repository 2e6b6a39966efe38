"""Hostile models through the real CLI: NaN weights, weights that overflow, a tokenizer with ids beyond the
embedding, a config.json that disagrees with the weights, a truncated weights file.

Each run exits with status 2 and one line naming the model (and the step or sample where numbers went
non-finite), prints no traceback, leaves its inputs byte for byte as they were and saves nothing non-finite
as a result: no trained student, no detections, no cache shard, no scored answers.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from leaf.cli import main
from leaf.models import check_vocabulary, first_non_finite
from leaf.tiny import DEFAULT_CORPUS, build_model, build_tokenizer


def _save(model, tok, path):
    model.save_pretrained(path)
    tok.save_pretrained(path)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    tok = build_tokenizer(style="llama3")
    _save(build_model(tok, hidden_size=32, num_layers=1, seed=0), tok, root / "teacher")
    _save(build_model(tok, hidden_size=16, num_layers=1, seed=1), tok, root / "student")
    nan = build_model(tok, hidden_size=16, num_layers=1, seed=2)
    with torch.no_grad():
        nan.model.layers[0].mlp.down_proj.weight[3, 5] = float("nan")
    _save(nan, tok, root / "nan")
    # finite weights whose logits overflow float32: a forward pass gives inf - inf = NaN
    over = build_model(tok, hidden_size=16, num_layers=1, seed=3)
    with torch.no_grad():
        over.lm_head.weight.copy_(torch.sign(torch.randn_like(over.lm_head.weight)) * 3e38)
    _save(over, tok, root / "overflow")
    small = build_model(tok, hidden_size=16, num_layers=1, seed=4)
    small.resize_token_embeddings(len(tok) - 60)  # ids len(tok)-60 .. len(tok)-1 have no row
    _save(small, tok, root / "small-vocab")
    _save(build_model(tok, hidden_size=16, num_layers=1, seed=5), tok, root / "truncated")
    weights = root / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _save(build_model(tok, hidden_size=16, num_layers=1, seed=6), tok, root / "config-vocab")
    cfg = json.loads((root / "config-vocab" / "config.json").read_text())
    cfg["vocab_size"] = cfg["vocab_size"] - 40
    (root / "config-vocab" / "config.json").write_text(json.dumps(cfg))
    with (root / "d.jsonl").open("w") as fh:
        for i in range(4):
            fh.write(json.dumps({"id": i, "instruction": DEFAULT_CORPUS[i], "response": DEFAULT_CORPUS[i + 1][:30],
                                 "answer": "3"}) + "\n")
    return root


DETECT = ["detect", "--teacher", "{T}", "--student", "{S}", "--data", "{R}/d.jsonl", "--out", "{O}/det.jsonl"]
DISTILL = ["distill", "--teacher", "{T}", "--student", "{S}", "--data", "{R}/d.jsonl", "--output-dir", "{O}/run",
           "--max-steps", "2", "--per-device-batch-size", "2"]
CACHE = ["cache-teacher", "--teacher", "{T}", "--data", "{R}/d.jsonl", "--top-k", "4", "--out", "{O}/cache"]
EVALUATE = ["evaluate", "--model", "{S}", "--benchmark", "{R}/d.jsonl", "--task", "math", "--max-new-tokens", "3",
            "--out", "{O}/results.json"]

# name -> (argv, teacher, student, text the one line must hold, the outputs that must not exist)
CASES = {
    "distill: NaN student": (DISTILL, "teacher", "nan", "{R}/nan: the model's weights hold NaN or infinite values (first in model.layers.0.mlp.down_proj.weight)", ["run/model.safetensors"]),
    "distill: NaN teacher": (DISTILL, "nan", "student", "{R}/nan: the teacher's weights hold NaN or infinite values", ["run/model.safetensors"]),
    "distill: overflowing student": (DISTILL, "teacher", "overflow", "step 1: the gradient norm is nan (student {R}/overflow, teacher {R}/teacher); the weights are finite, so a forward pass overflowed", ["run/model.safetensors", "run/checkpoint-1", "run/checkpoint-2"]),
    "detect: NaN student": (DETECT, "teacher", "nan", "{R}/nan: the student's weights hold NaN", ["det.jsonl"]),
    "detect: overflowing teacher": (DETECT, "overflow", "student", "{R}/overflow: the model's logits are not finite on a two-token probe input", ["det.jsonl"]),
    "detect: overflowing student": (DETECT, "teacher", "overflow", "{R}/overflow: the model's logits are not finite on a two-token probe input", ["det.jsonl"]),
    "detect: tokenizer beyond the embedding": (DETECT, "teacher", "small-vocab", "{R}/small-vocab: the tokenizer has 460 tokens but the student's embedding only 400 rows", ["det.jsonl"]),
    "detect: truncated weights": (DETECT, "truncated", "student", "{R}/truncated: cannot load the model (", ["det.jsonl"]),
    "detect: config vocab_size against the weights": (DETECT, "config-vocab", "student", "{R}/config-vocab: cannot load the model (the weights' shapes do not match config.json", ["det.jsonl"]),
    "cache-teacher: NaN teacher": (CACHE, "nan", "student", "{R}/nan: the teacher's weights hold NaN", ["cache/shard-00000.safetensors"]),
    "cache-teacher: overflowing teacher": (CACHE, "overflow", "student", "{R}/overflow: the model's logits are not finite on a two-token probe input", ["cache/shard-00000.safetensors"]),
    "evaluate: NaN model": (EVALUATE, "teacher", "nan", "{R}/nan: the model's weights hold NaN", ["results.json"]),
    "evaluate: overflowing model": (EVALUATE, "teacher", "overflow", "{R}/overflow: the model's logits are not finite at generated token 1", ["results.json"]),
    "evaluate: tokenizer beyond the embedding": (EVALUATE, "teacher", "small-vocab", "{R}/small-vocab: the tokenizer has 460 tokens but the model's embedding only 400 rows", ["results.json"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_model_is_one_line_and_saves_nothing(zoo, tmp_path, capsys, name):
    argv, teacher, student, expected, absent = CASES[name]
    names = {"T": str(zoo / teacher), "S": str(zoo / student), "R": str(zoo), "O": str(tmp_path)}
    before = {p: p.read_bytes() for p in zoo.rglob("*") if p.is_file()}
    code = main([a.format(**names) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines()
             if x.strip() and not x.startswith(("WARNING", "Writing", "Loading")) and "%|" not in x]  # progress bars
    assert len(lines) == 1, err
    assert expected.format(**names) in lines[0], lines[0]
    after = {p: p.read_bytes() for p in zoo.rglob("*") if p.is_file()}
    assert after == before  # inputs unchanged, nothing written into a model folder
    for rel in absent:
        assert not (tmp_path / rel).exists(), rel
    if (tmp_path / "det.jsonl").exists():  # a resumable output may exist: it holds no record
        assert [x for x in (tmp_path / "det.jsonl").read_text().splitlines() if x.strip()] == []


def test_the_weight_scan_finds_the_first_bad_tensor_and_accepts_finite_ones():
    tok = build_tokenizer(style="llama3")
    model = build_model(tok, hidden_size=16, num_layers=2, seed=0)
    assert first_non_finite(model) is None
    with torch.no_grad():
        model.model.layers[1].self_attn.k_proj.weight[0, 0] = math.inf
        model.lm_head.weight[2, 2] = float("nan")
    assert first_non_finite(model) == "model.layers.1.self_attn.k_proj.weight"  # in named_parameters order


def test_a_padded_embedding_is_accepted_and_a_short_one_refused():
    from leaf.config import ConfigError

    tok = build_tokenizer(style="llama3")
    model = build_model(tok, hidden_size=16, num_layers=1, seed=0)
    model.resize_token_embeddings(len(tok) + 28)  # padded to a multiple, as real checkpoints are
    check_vocabulary(model, tok, "padded")
    model.resize_token_embeddings(len(tok) - 1)
    with pytest.raises(ConfigError, match=f"has {len(tok)} tokens but the model's embedding only {len(tok) - 1} rows"):
        check_vocabulary(model, tok, "short")


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_a_step_that_goes_non_finite_stops_before_the_update(zoo, tmp_path, monkeypatch, where):
    """Finite weights and numbers made NaN at step 2 only -- in the loss itself (the loss check) or after it,
    so that only the gradients are NaN (the gradient-norm check): the run stops at step 2, naming it, and
    step 1's checkpoint (finite) is all that was saved."""
    import dataclasses

    import leaf.distill.losses as losses
    import leaf.distill.trainer as trainer_mod
    from leaf.distill import distill
    from leaf.models import NonFiniteError

    calls = {"n": 0}
    if where == "loss":
        def poison(fn):
            def wrapped(*args, **kwargs):
                parts = fn(*args, **kwargs)
                calls["n"] += 1
                return dataclasses.replace(parts, loss=parts.loss * float("nan")) if calls["n"] == 2 else parts
            return wrapped
        monkeypatch.setattr(trainer_mod, "distill_loss", poison(trainer_mod.distill_loss))
        monkeypatch.setattr(losses, "chunked_head_kl", poison(losses.chunked_head_kl))
        expected = r"step 2: the distillation loss is nan .*stopped before this step changed the weights"
    else:
        real = trainer_mod.DistillTrainer.compute_loss

        def poisoned(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = real(self, model, inputs, return_outputs, num_items_in_batch)
            return loss * float("nan") if self.state.global_step == 1 and model.training else loss
        monkeypatch.setattr(trainer_mod.DistillTrainer, "compute_loss", poisoned)
        expected = r"step 2: the gradient norm is nan .*stopped before this step changed the weights"
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=expected):
        distill(student=str(zoo / "student"), teacher=str(zoo / "teacher"), data=zoo / "d.jsonl", out=out,
                max_steps=3, save_steps=1, per_device_batch_size=2, grad_accum=1)
    assert (out / "checkpoint-1").exists() and not (out / "checkpoint-2").exists()
    assert not (out / "model.safetensors").exists()
    from safetensors.torch import load_file

    saved = load_file(str(out / "checkpoint-1" / "model.safetensors"))
    assert all(bool(torch.isfinite(v).all()) for v in saved.values())


def test_detection_stops_on_a_non_finite_saliency_naming_the_sample_and_model():
    """The per-sample check behind ``leaf detect`` (models that pass the probe but overflow on some input)."""
    from types import SimpleNamespace

    from leaf.detect.scoring import DetectionScorer
    from leaf.models import NonFiniteError

    scorer = DetectionScorer(None, None, {}, {"tau": 0.1}, names={"teacher": "T-folder", "student": "S-folder"})
    batch = [SimpleNamespace(key="a", sample=SimpleNamespace(id="a")), SimpleNamespace(key="b", sample=SimpleNamespace(id="b"))]
    fine = ([torch.ones(3), torch.ones(2)], [1.0, 2.0])
    scorer._check_finite(batch, {"teacher": fine, "student": fine})
    with pytest.raises(NonFiniteError, match=r"sample b: the student's saliency is not finite \(S-folder\)"):
        scorer._check_finite(batch, {"teacher": fine, "student": ([torch.ones(3), torch.tensor([1.0, math.inf])], [1.0, 2.0])})
    with pytest.raises(NonFiniteError, match=r"sample a: the teacher's loss is not finite \(T-folder\)"):
        scorer._check_finite(batch, {"teacher": (fine[0], [math.nan, 2.0]), "student": fine})
