"""Teacher-logit cache: exact with k = V, within the documented bound for small k, resumable, checked."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from leaf.config import ConfigError
from leaf.distill import distill
from leaf.distill.cache import CacheConfig, TeacherCache, build_cache
from leaf.distill.data import load_examples
from leaf.distill.losses import forward_kl, topk_error_bound
from leaf.models import load_model, load_tokenizer


@pytest.fixture(scope="module")
def sharp_teacher(distill_setup, tmp_path_factory):
    """The tiny teacher with a scaled output layer: peaked distributions, like a trained LM."""
    out = tmp_path_factory.mktemp("sharp")
    model = load_model(str(distill_setup / "teacher"))
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    model.save_pretrained(out)
    load_tokenizer(str(distill_setup / "teacher")).save_pretrained(out)
    return out


def _cache(setup, teacher, out, k, **kw):
    return build_cache(
        CacheConfig(teacher=str(teacher), tokenizer=str(setup / "student"), data=setup / "d.jsonl",
                    counterfactuals=setup / "cf.jsonl", out=out, top_k=k, **kw)
    ).out


def _first_loss(setup, out, **kw):
    distill(
        student=str(setup / "student"), data=setup / "d.jsonl", counterfactuals=setup / "cf.jsonl", out=out,
        per_device_batch_size=12, grad_accum=1, max_steps=1, save_steps=1000, **kw,
    )
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[0])


def test_full_vocabulary_cache_equals_live_teacher(distill_setup, sharp_teacher, tmp_path):
    vocab = len(load_tokenizer(str(distill_setup / "student")))
    cache = _cache(distill_setup, sharp_teacher, tmp_path / "c", vocab, temperature=2.0)
    live = _first_loss(distill_setup, tmp_path / "live", teacher=str(sharp_teacher), temperature=2.0, lam=0.3)
    cached = _first_loss(distill_setup, tmp_path / "cached", teacher_cache=cache, temperature=2.0, lam=0.3)
    for key in ("loss", "kd_loss", "cd_loss"):
        assert cached[key] == pytest.approx(live[key], rel=1e-5)


def test_topk_cache_error_within_documented_bound(distill_setup, sharp_teacher, tmp_path):
    k, lam = 16, 0.5
    cache = _cache(distill_setup, sharp_teacher, tmp_path / "c", k)
    live = _first_loss(distill_setup, tmp_path / "live", teacher=str(sharp_teacher), lam=lam)
    cached = _first_loss(distill_setup, tmp_path / "cached", teacher_cache=cache, lam=lam)

    # independent: exact KL per token, and the bound T^2 * p_tail * log(1 / min q(v|tail)) from the stored top-k
    tok = load_tokenizer(str(distill_setup / "student"))
    teacher, student = load_model(str(sharp_teacher)), load_model(str(distill_setup / "student"))
    store = TeacherCache.open(cache)
    sums = {False: torch.zeros(3), True: torch.zeros(3)}  # exact, bound, tokens
    tail = []
    for ex in load_examples(tok, distill_setup / "d.jsonl", distill_setup / "cf.jsonl"):
        ids = torch.tensor([ex.input_ids])
        mask = torch.tensor(ex.labels[1:]) != -100
        with torch.no_grad():
            s = student(ids).logits[0, :-1][mask]
            t = teacher(ids).logits[0, :-1][mask]
        lp, top = store.get(ex.key)
        assert torch.equal(top.long(), torch.log_softmax(t, -1).topk(k, -1).indices)
        sums[ex.counterfactual] += torch.stack([forward_kl(t, s).sum(), topk_error_bound(s, top, lp).sum(), torch.tensor(float(len(s)))])
        tail.append(1 - lp.exp().sum(-1))
    exact = lam * sums[False][0] / sums[False][2] + (1 - lam) * sums[True][0] / sums[True][2]
    bound = lam * sums[False][1] / sums[False][2] + (1 - lam) * sums[True][1] / sums[True][2]
    assert live["loss"] == pytest.approx(exact.item(), rel=1e-4)
    gap = live["loss"] - cached["loss"]
    assert -1e-6 <= gap <= bound.item() + 1e-6
    assert gap > 0  # k < V does lose something
    assert store.manifest["mean_tail_mass"] == pytest.approx(torch.cat(tail).mean().item(), rel=1e-4)
    # what the docs quote: relative error and tail mass of this peaked teacher
    print(f"k={k}: exact {live['loss']:.5f} cached {cached['loss']:.5f} rel.err {gap / live['loss']:.4f} "
          f"bound {bound.item():.5f} mean tail mass {torch.cat(tail).mean():.4f}")


def test_cache_is_resumable_and_checked(distill_setup, sharp_teacher, tmp_path):
    ref = _cache(distill_setup, sharp_teacher, tmp_path / "ref", 4, shard_size=5)
    shards = sorted(ref.glob("shard-*.safetensors"))
    assert len(shards) == 3  # 12 examples in shards of 5
    part = tmp_path / "part"
    _cache(distill_setup, sharp_teacher, part, 4, shard_size=5)
    (part / "shard-00002.safetensors").unlink()  # crash before the last shard
    manifest = json.loads((part / "manifest.json").read_text())
    manifest["complete"] = False
    (part / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="incomplete"):
        TeacherCache.open(part)
    _cache(distill_setup, sharp_teacher, part, 4, shard_size=5)  # resumes: only the missing shard
    a, b = TeacherCache.open(ref), TeacherCache.open(part)
    assert set(a.index) == set(b.index) and len(a.index) == 12
    for key in a.index:
        for x, y in zip(a.get(key), b.get(key)):
            assert torch.equal(x, y)
    tensors = load_file(str(part / "shard-00002.safetensors"))
    assert tensors["ids"].dtype == torch.uint16  # the tiny teacher's vocabulary fits 16 bits
    manifest = json.loads((part / "manifest.json").read_text())
    payload = sum(load_file(str(p))[name].nbytes for p in shards for name in ("logprobs", "ids"))
    assert payload == manifest["tokens"] * 4 * (4 + 2)  # k = 4: float32 log-probs, 16-bit ids
    on_disk = sum(p.stat().st_size for p in sorted(part.glob("shard-*.safetensors")))
    assert manifest["bytes_per_token"] == pytest.approx(on_disk / manifest["tokens"])
    assert 4 * 6 < manifest["bytes_per_token"] < 4 * 6 + 3 * 2_000 / manifest["tokens"]  # 3 shards: offsets, header
    with pytest.raises(ConfigError, match="other settings"):
        _cache(distill_setup, sharp_teacher, part, 8, shard_size=5)
    with pytest.raises(ConfigError, match="temperature"):
        _first_loss(distill_setup, tmp_path / "t2", teacher_cache=part, temperature=2.0)
    with pytest.raises(ConfigError, match="examples differ"):
        _first_loss(distill_setup, tmp_path / "noeos", teacher_cache=part, include_eos=False)


def test_cache_refuses_a_tokenizer_of_another_vocabulary_and_a_top_k_beyond_it(distill_setup, tmp_path):
    from leaf.tiny import build_tokenizer

    other = tmp_path / "other-tok"
    build_tokenizer(["completely different words here"] * 5, style="llama3", vocab_size=200).save_pretrained(other)
    with pytest.raises(ConfigError, match="the top-k cache stores ids of one vocabulary"):
        build_cache(teacher=str(distill_setup / "teacher"), tokenizer=str(other), data=distill_setup / "d.jsonl",
                    out=tmp_path / "c")
    with pytest.raises(ConfigError, match="--top-k 100000 is more than the"):
        build_cache(teacher=str(distill_setup / "teacher"), data=distill_setup / "d.jsonl", out=tmp_path / "c",
                    top_k=100000)
    assert not (tmp_path / "c").exists()


def test_a_cache_that_keeps_little_of_the_mass_is_flagged(distill_setup, tmp_path, caplog):
    summary = build_cache(teacher=str(distill_setup / "teacher"), data=distill_setup / "d.jsonl", out=tmp_path / "c",
                          top_k=2, temperature=5.0)
    assert summary.mean_tail_mass > 0.1
    assert "raise --top-k" in caplog.text


def test_an_example_that_runs_out_of_memory_alone_is_skipped_and_named(distill_setup, tmp_path, monkeypatch):
    import leaf.heads as heads

    real = heads.final_hidden_states
    longest = max(len(e.input_ids) for e in load_examples(load_tokenizer(str(distill_setup / "teacher")),
                                                          distill_setup / "d.jsonl"))

    def small_memory(model, keep, head=None, **inputs):
        if inputs["input_ids"].shape[0] > 2 or inputs["input_ids"].shape[1] == longest:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real(model, keep, head, **inputs)

    monkeypatch.setattr(heads, "final_hidden_states", small_memory)
    summary = build_cache(teacher=str(distill_setup / "teacher"), data=distill_setup / "d.jsonl", out=tmp_path / "c",
                          batch_size=8)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert len(manifest["skipped"]) >= 1 and manifest["complete"]
    cache = TeacherCache.open(tmp_path / "c")
    assert all(k not in cache.index for k in manifest["skipped"]) and len(cache.index) == summary.examples - len(manifest["skipped"])
    with pytest.raises(ConfigError, match="skipped when they ran out of memory even alone"):
        tok = load_tokenizer(str(distill_setup / "teacher"))
        cache.check(tok, load_examples(tok, distill_setup / "d.jsonl"), 1.0)


@pytest.mark.parametrize("vocab, dtype", [(49_152, "uint16"), (65_536, "uint16"), (65_537, "int32"),
                                          (262_144, "int32")])
def test_ids_are_stored_in_the_narrowest_dtype_that_holds_the_vocabulary(vocab, dtype):
    from leaf.distill.cache import ids_dtype

    kind = ids_dtype(vocab)
    assert kind == getattr(torch, dtype)
    top = torch.tensor([0, vocab - 1], dtype=torch.int64)
    assert torch.equal(top.to(torch.int32).to(kind).long(), top)  # the largest id survives the round trip
