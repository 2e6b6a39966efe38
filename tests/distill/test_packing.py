"""Packed sequences (``--packing``): one row per micro-batch, position ids restarting at each example, no
padding. The loss, its parts and every gradient equal the padded batch of the same examples."""

from __future__ import annotations

import pytest
import torch

from leaf.batching import IGNORE_INDEX, pack
from leaf.distill.config import DistillConfig
from leaf.distill.data import DistillCollator
from leaf.distill.run import build_trainer


def test_pack_restarts_positions_and_ignores_each_first_label():
    row = pack([[5, 6, 7], [8], [9, 10]], [[5, 6, 7], [8], [9, 10]], pad_value=0, multiple_of=4)
    assert row["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 0, 0]]
    assert row["position_ids"].tolist() == [[0, 1, 2, 0, 0, 1, 0, 1]]
    assert row["segment"].tolist() == [[0, 0, 0, 1, 2, 2, -1, -1]]
    I = IGNORE_INDEX
    assert row["labels"].tolist() == [[I, 6, 7, I, I, 10, I, I]]


def _config(setup, tmp_path, **kw):
    base = dict(student=str(setup / "student"), teacher=str(setup / "teacher"), data=setup / "d.jsonl",
                counterfactuals=setup / "cf.jsonl", out=tmp_path / "x", lam=0.4, packing="off")
    base.update(kw)
    return DistillConfig(**base)


def _loss_and_grads(trainer, batch):
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()
    return loss.item(), {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def _packed_collator(trainer):
    collator = trainer.data_collator
    base = getattr(collator, "base", collator)
    packed = DistillCollator(base.pad_token_id, base.pad_to_multiple_of, base.teacher_pad_token_id, packed=True)
    if hasattr(collator, "base"):
        return type(collator)(packed, collator.cache, collator.dataset)
    return packed


@pytest.mark.parametrize("chunked_head, alpha, temperature", [("never", 0.0, 1.0), ("always", 0.3, 1.5)])
def test_packed_loss_and_gradients_equal_padded(distill_setup, tmp_path, chunked_head, alpha, temperature):
    trainer = build_trainer(_config(distill_setup, tmp_path, chunked_head=chunked_head, alpha=alpha,
                                    temperature=temperature, kl_chunk_size=5))
    items = [trainer.train_dataset[i] for i in range(12)]
    padded = trainer.data_collator(items)
    packed = _packed_collator(trainer)(items)
    assert packed["input_ids"].shape == (1, int(padded["attention_mask"].sum()))  # no padding at all
    assert "attention_mask" not in packed
    counts = trainer._get_num_items_in_batch([padded], "cpu")
    assert trainer._get_num_items_in_batch([packed], "cpu").tolist() == counts.tolist()
    assert counts.tolist()[1] > 0 and counts.tolist()[0] > 0  # both kinds of example in the batch
    want, want_grads = _loss_and_grads(trainer, padded)
    trainer._sums.zero_()
    got, grads = _loss_and_grads(trainer, packed)
    assert got == pytest.approx(want, rel=1e-5)
    assert set(grads) == set(want_grads) and grads
    for name in grads:
        torch.testing.assert_close(grads[name], want_grads[name], rtol=1e-5, atol=1e-6)


def test_packed_rows_do_not_see_each_other(distill_setup, tmp_path):
    """Changing one example's tokens changes no other example's loss in the packed row."""
    trainer = build_trainer(_config(distill_setup, tmp_path, chunked_head="never"))
    trainer.model.eval()
    items = [dict(trainer.train_dataset[i]) for i in range(4)]
    collate = _packed_collator(trainer)
    trainer._eval_rows = {}
    with torch.no_grad():
        trainer.compute_loss(trainer.model, collate(items))
    first = dict(trainer._eval_rows)
    items[0]["input_ids"] = [3 + (t * 7) % 50 for t in items[0]["input_ids"]]
    trainer._eval_rows = {}
    with torch.no_grad():
        trainer.compute_loss(trainer.model, collate(items))
    second = trainer._eval_rows
    trainer._eval_rows = None
    idx = [int(it["index"]) for it in items]
    assert first[idx[0]][0] != pytest.approx(second[idx[0]][0])
    for i in idx[1:]:
        assert first[i][0] == pytest.approx(second[i][0], rel=1e-6)


def test_packed_with_topk_cache_equals_padded(distill_setup, tmp_path):
    from leaf.distill.cache import CacheConfig, build_cache

    cache = build_cache(CacheConfig(
        teacher=str(distill_setup / "teacher"), tokenizer=str(distill_setup / "student"), data=distill_setup / "d.jsonl",
        counterfactuals=distill_setup / "cf.jsonl", out=tmp_path / "cache", top_k=16,
    )).out
    trainer = build_trainer(_config(distill_setup, tmp_path, teacher=None, teacher_cache=cache, alpha=0.2,
                                    chunked_head="always", kl_chunk_size=4))
    items = [trainer.train_dataset[i] for i in range(12)]
    want, want_grads = _loss_and_grads(trainer, trainer.data_collator(items))
    got, grads = _loss_and_grads(trainer, _packed_collator(trainer)(items))
    assert got == pytest.approx(want, rel=1e-5)
    for name in grads:
        torch.testing.assert_close(grads[name], want_grads[name], rtol=1e-5, atol=1e-6)


def test_packed_cross_tokenizer_equals_padded(distill_setup, tmp_path):
    """A teacher with another tokenizer: both renderings are packed, each with its own position ids."""
    from leaf.tiny import DEFAULT_CORPUS, build_model, build_tokenizer

    tok = build_tokenizer([c[::-1] for c in DEFAULT_CORPUS] + DEFAULT_CORPUS, style="chatml", vocab_size=400)
    build_model(tok, hidden_size=32, num_layers=2, seed=3).save_pretrained(tmp_path / "t")
    tok.save_pretrained(tmp_path / "t")
    trainer = build_trainer(_config(distill_setup, tmp_path, teacher=str(tmp_path / "t"), cross_tokenizer="auto"))
    items = [trainer.train_dataset[i] for i in range(8)]
    packed = _packed_collator(trainer)(items)
    assert packed["teacher_input_ids"].shape[0] == 1 and "teacher_position_ids" in packed
    want, want_grads = _loss_and_grads(trainer, trainer.data_collator(items))
    got, grads = _loss_and_grads(trainer, packed)
    assert got == pytest.approx(want, rel=1e-5)
    for name in grads:
        torch.testing.assert_close(grads[name], want_grads[name], rtol=1e-5, atol=1e-6)


def test_packed_run_trains_as_the_padded_run(distill_setup, tmp_path):
    """`--packing on` end to end: the same losses step by step and the same weights after 4 optimiser steps."""
    import json

    from safetensors.torch import load_file

    from leaf.distill import distill

    common = dict(student=str(distill_setup / "student"), teacher=str(distill_setup / "teacher"),
                  data=distill_setup / "d.jsonl", counterfactuals=distill_setup / "cf.jsonl", save_steps=1000,
                  max_steps=4, batch_size=3, grad_accum=1, learning_rate=1e-2, warmup_steps=0, logging_steps=1)
    runs = {p: distill(out=tmp_path / p, packing=p, **common).out for p in ("off", "on")}
    losses = {p: [json.loads(x)["loss"] for x in (o / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
              for p, o in runs.items()}
    assert len(losses["on"]) == 4
    assert losses["on"] == pytest.approx(losses["off"], rel=1e-4)
    assert [json.loads((runs[p] / "leaf_config.json").read_text())["_run"]["packed"] for p in ("off", "on")] == [False, True]
    a, b = (load_file(runs[p] / "model.safetensors") for p in ("off", "on"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)


def test_auto_packs_only_with_a_variable_length_attention_kernel(distill_setup):
    from leaf.config import ConfigError
    from leaf.models import load_model, use_packing

    model = load_model(str(distill_setup / "student"))
    assert use_packing("auto", model) is (model.config._attn_implementation in ("flash_attention_2", "flex_attention"))
    assert use_packing("on", model) and not use_packing("off", model)
    model.config._attn_implementation = "flash_attention_2"
    assert use_packing("auto", model)
    with pytest.raises(ConfigError):
        use_packing("yes", model)


def test_packed_teacher_cache_equals_padded(distill_setup, tmp_path):
    from safetensors.torch import load_file

    from leaf.distill.cache import CacheConfig, build_cache

    outs = {}
    for p in ("off", "on"):
        outs[p] = build_cache(CacheConfig(
            teacher=str(distill_setup / "teacher"), tokenizer=str(distill_setup / "student"),
            data=distill_setup / "d.jsonl", counterfactuals=distill_setup / "cf.jsonl", out=tmp_path / p, top_k=8,
            batch_size=5, packing=p)).out
    shards = sorted(q.name for q in outs["off"].glob("*.safetensors"))
    assert shards and shards == sorted(q.name for q in outs["on"].glob("*.safetensors"))
    for name in shards:
        a, b = load_file(outs["off"] / name), load_file(outs["on"] / name)
        assert set(a) == set(b)
        for key in a:
            if a[key].is_floating_point():
                torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-5)
            else:  # top-k ids: equal unless two log-probs tie within float error
                assert (b[key] == a[key]).float().mean() > 0.99
