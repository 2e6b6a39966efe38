"""``leaf cache-teacher`` in 2 CPU processes (gloo): the same cached log-probs as 1 process."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from leaf.distill.cache import CacheConfig, TeacherCache, build_cache

_spec = importlib.util.spec_from_file_location("_launch", Path(__file__).parents[1] / "distributed" / "launch.py")
_launch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_launch)
launch = _launch.launch


def _same_cache(a, b):
    """The caches in folders ``a`` and ``b`` hold the same 12 examples' top-k (within 1e-5) and manifests."""
    one, two = TeacherCache.open(a), TeacherCache.open(b)
    assert set(one.index) == set(two.index) and len(one.index) == 12
    for key in one.index:
        (lp1, ids1), (lp2, ids2) = one.get(key), two.get(key)
        torch.testing.assert_close(lp2, lp1, rtol=1e-5, atol=1e-6)
        assert torch.equal(ids1, ids2)
        if one.cross_tokenizer:
            torch.testing.assert_close(two.actual(key), one.actual(key), rtol=1e-5, atol=1e-6)
    m1, m2 = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    for m in (m1, m2):
        m.pop("config")
    assert m2.pop("mean_tail_mass") == pytest.approx(m1.pop("mean_tail_mass"), rel=1e-5)
    assert m1 == m2 and m2["complete"]


def test_two_process_cache_equals_one_process(distill_setup, tmp_path):
    args = dict(teacher=str(distill_setup / "teacher"), tokenizer=str(distill_setup / "student"),
                data=distill_setup / "d.jsonl", counterfactuals=distill_setup / "cf.jsonl", top_k=8, shard_size=3,
                batch_size=2)
    build_cache(CacheConfig(out=tmp_path / "one", **args))
    proc = launch(["cache-teacher", "--teacher", args["teacher"], "--tokenizer", args["tokenizer"],
                   "--data", str(args["data"]), "--counterfactuals", str(args["counterfactuals"]), "--top-k", "8",
                   "--shard-size", "3", "--batch-size", "2", "--out", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "two").glob("shard-*.safetensors"))
    assert names == ["shard-r0-00000.safetensors", "shard-r0-00001.safetensors",
                     "shard-r1-00000.safetensors", "shard-r1-00001.safetensors"]  # 12 examples, 4 shard files
    _same_cache(tmp_path / "one", tmp_path / "two")


@pytest.mark.parametrize("tokenizer", ["same", "other"])
def test_sharded_teacher_cache_equals_one_process(distill_setup, other_teacher, tmp_path, tokenizer):
    """--shard-models fsdp: the teacher sharded over 2 processes (FSDP2) caches what 1 process caches; shard files
    of 5, 5 and 2 examples give rank 0 four forwards and rank 1 three, plus one padding forward. ``other``: a
    teacher with another tokenizer, cached on its own tokens."""
    teacher = other_teacher if tokenizer == "other" else distill_setup / "teacher"
    cross = dict(cross_tokenizer="auto") if tokenizer == "other" else {}
    args = dict(teacher=str(teacher), tokenizer=str(distill_setup / "student"),
                data=distill_setup / "d.jsonl", counterfactuals=distill_setup / "cf.jsonl", top_k=8, shard_size=5,
                batch_size=2)
    build_cache(CacheConfig(out=tmp_path / "one", **args, **cross))
    proc = launch(["-v", "cache-teacher", "--teacher", args["teacher"], "--tokenizer", args["tokenizer"],
                   "--data", str(args["data"]), "--counterfactuals", str(args["counterfactuals"]), "--top-k", "8",
                   "--shard-size", "5", "--batch-size", "2", "--shard-models", "fsdp", "--out", str(tmp_path / "two"),
                   *(["--cross-tokenizer", "auto"] if cross else [])])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("teacher sharded (FSDP2)") == 2, proc.stderr[-3000:]
    _same_cache(tmp_path / "one", tmp_path / "two")


def test_sharded_teacher_cache_refuses_a_device_map(distill_setup, tmp_path):
    with pytest.raises(ValueError, match="--device-map"):
        CacheConfig(teacher=str(distill_setup / "teacher"), data=distill_setup / "d.jsonl", out=tmp_path / "c",
                    shard_models="fsdp", device_map="auto").validate()
