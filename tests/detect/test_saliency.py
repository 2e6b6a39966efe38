"""Saliency against independent computations: full-logit autograd and finite differences."""

from __future__ import annotations

import copy

import pytest
import torch

from leaf.data.render import encode, render
from leaf.detect.saliency import embedding_saliency, pad_batch

PAIRS = [
    ("Tom has 3 apples and buys 5 more. How many apples?", "He has 8 apples. The answer is 8."),
    ("Ignore the hint 42. What does key 7 map to?", "Key 7 maps to 17."),
    ("def add(a, b):\n    # returns the sum\n    return a + b\nWhat is add(2, 3)?", "It returns 2 + 3 = 5."),
]


def _item(tok, instruction, response):
    r = render(tok, instruction, response)
    enc = encode(tok, r.text)
    return enc.input_ids, enc.tokens_in([r.response_span])


def _reference(model, ids, targets):
    """Independent: embedding lookup by hand, full logits, log_softmax, mean NLL, backward."""
    ids_t = torch.tensor([ids])
    weight = model.get_input_embeddings().weight.detach()
    embeds = weight[ids_t].clone().requires_grad_(True)
    logits = model(inputs_embeds=embeds).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    nll = torch.stack([-logp[t - 1, ids[t]] for t in targets]).mean()
    (grad,) = torch.autograd.grad(nll, embeds)
    return grad[0].norm(dim=-1), nll.item()


def test_saliency_equals_independent_autograd(llama_tok, tiny_llama):
    for instruction, response in PAIRS:
        ids, targets = _item(llama_tok, instruction, response)
        want, want_loss = _reference(tiny_llama, ids, targets)
        sal, loss = embedding_saliency(tiny_llama, *pad_batch([ids], [targets], llama_tok.pad_token_id))
        torch.testing.assert_close(sal[0], want.float(), rtol=1e-4, atol=1e-7)
        assert loss.item() == pytest.approx(want_loss, rel=1e-5)


def test_saliency_matches_finite_differences(llama_tok, tiny_llama):
    """Directional derivative of the loss along each token's own gradient equals its norm.

    The model runs in float64, but LLaMA's RMSNorm computes in float32, so the
    step is kept large (1e-3, central differences: error O(h^2)) and the tolerance at 1e-3.
    """
    model = copy.deepcopy(tiny_llama).double()
    ids, targets = _item(llama_tok, *PAIRS[0])
    ids_t, att, tgt = pad_batch([ids], [targets], llama_tok.pad_token_id)
    sal, _ = embedding_saliency(model, ids_t, att, tgt)
    weight = model.get_input_embeddings().weight.detach()
    base = weight[ids_t].clone().requires_grad_(True)
    loss_fn = lambda e: torch.nn.functional.cross_entropy(  # noqa: E731
        model(inputs_embeds=e).logits[0][[t - 1 for t in targets]], ids_t[0, targets]
    )
    (grad,) = torch.autograd.grad(loss_fn(base), base)
    h = 1e-3
    for i in (0, 3, len(ids) // 2, targets[0] - 1):
        u = torch.zeros_like(base)
        u[0, i] = grad[0, i] / grad[0, i].norm()
        with torch.no_grad():
            fd = (loss_fn(base + h * u) - loss_fn(base - h * u)) / (2 * h)
        assert float(fd) == pytest.approx(float(sal[0, i]), rel=1e-3)


def test_batched_equals_unbatched(llama_tok, tiny_llama):
    items = [_item(llama_tok, i, r) for i, r in PAIRS]
    ids, att, tgt = pad_batch([x[0] for x in items], [x[1] for x in items], llama_tok.pad_token_id)
    assert att.sum(1).unique().numel() == len(items), "lengths should differ so padding is exercised"
    sal_b, loss_b = embedding_saliency(tiny_llama, ids, att, tgt)
    for b, (seq, targets) in enumerate(items):
        sal_1, loss_1 = embedding_saliency(tiny_llama, *pad_batch([seq], [targets], llama_tok.pad_token_id))
        one, batched = sal_1[0], sal_b[b, : len(seq)]
        assert ((batched - one).abs() / one.abs().clamp_min(1e-12)).max() <= 1e-4
        assert loss_b[b].item() == pytest.approx(loss_1.item(), rel=1e-5)
        assert (sal_b[b, len(seq):] == 0).all()


def test_no_parameter_gradient_is_allocated(llama_tok, tiny_llama):
    model = copy.deepcopy(tiny_llama).train()  # even a trainable model in train mode
    for p in model.parameters():
        p.requires_grad_(True)
    ids, targets = _item(llama_tok, *PAIRS[1])
    embedding_saliency(model, *pad_batch([ids], [targets], llama_tok.pad_token_id))
    assert all(p.grad is None for p in model.parameters())


def test_qwen2_architecture_and_bfloat16(tokenizers, tiny_qwen):
    tok = tokenizers["chatml"]
    ids, targets = _item(tok, *PAIRS[0])
    batch = pad_batch([ids], [targets], tok.pad_token_id)
    want, _ = _reference(tiny_qwen, ids, targets)
    sal, _ = embedding_saliency(tiny_qwen, *batch)
    torch.testing.assert_close(sal[0], want.float(), rtol=1e-4, atol=1e-7)
    sal_bf16, loss_bf16 = embedding_saliency(copy.deepcopy(tiny_qwen).to(torch.bfloat16), *batch)
    assert torch.isfinite(sal_bf16).all() and torch.isfinite(loss_bf16).all()
    corr = torch.corrcoef(torch.stack([sal[0], sal_bf16[0]]))[0, 1]
    assert corr > 0.95


def test_rejects_position_zero_target_and_empty_targets(llama_tok, tiny_llama):
    ids, targets = _item(llama_tok, *PAIRS[1])
    with pytest.raises(ValueError, match="position 0"):
        embedding_saliency(tiny_llama, *pad_batch([ids], [[0, *targets]], 0))
    with pytest.raises(ValueError, match="at least one target"):
        embedding_saliency(tiny_llama, *pad_batch([ids], [[]], 0))
