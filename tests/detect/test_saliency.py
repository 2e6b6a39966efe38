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


def test_no_parameter_gradient_is_computed(llama_tok, tiny_llama):
    """Autograd computes no gradient for any parameter, not merely leaves .grad empty.

    A hook on every parameter fires whenever backward computes that parameter's
    gradient (through .backward() or torch.autograd.grad alike); the hooks are
    first shown to fire on a pass that does take parameter gradients.
    """
    model = copy.deepcopy(tiny_llama).train()  # even a trainable model in train mode
    for p in model.parameters():
        p.requires_grad_(True)
    computed: list[str] = []
    for name, p in model.named_parameters():
        p.register_hook(lambda g, name=name: computed.append(name))
    ids, targets = _item(llama_tok, *PAIRS[1])
    batch = pad_batch([ids], [targets], llama_tok.pad_token_id)
    model(input_ids=batch[0]).logits.sum().backward()  # the hooks do see parameter gradients
    assert len(computed) == sum(1 for _ in model.parameters())
    computed.clear()
    model.zero_grad(set_to_none=True)
    sal, _ = embedding_saliency(model, *batch)
    assert sal.abs().sum() > 0 and computed == []
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


# ----------------------------------------------------------------------------
# Chunked output head: equal to the previous full-range implementation.
# ----------------------------------------------------------------------------


def _old_embedding_saliency(model, input_ids, attention_mask, target_mask):
    """The implementation before chunked output heads (logits for every position in [lo, hi) of the batch)."""
    import torch.nn.functional as F

    target_mask = target_mask.bool() & attention_mask.bool()
    n_targets = target_mask.sum(1)
    with torch.enable_grad():
        embeds = model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
        predicting = target_mask[:, 1:].any(0).nonzero().squeeze(1)
        lo, hi = int(predicting.min()), int(predicting.max()) + 1
        logits = model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False,
                       logits_to_keep=torch.arange(lo, hi)).logits
        targets = input_ids[:, lo + 1 : hi + 1]
        mask = target_mask[:, lo + 1 : hi + 1]
        nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
        loss = (nll * mask).sum(1) / n_targets
        (grad,) = torch.autograd.grad(loss.sum(), embeds)
    return (grad.float().norm(dim=-1) * attention_mask).detach(), loss.detach()


@torch.no_grad()
def _old_token_surprisal(model, input_ids, attention_mask, positions):
    import torch.nn.functional as F

    positions = positions.bool().clone()
    positions[:, 0] = False
    out = torch.zeros(input_ids.shape, dtype=torch.float32)
    predicting = positions[:, 1:].any(0).nonzero().squeeze(1)
    lo, hi = int(predicting.min()), int(predicting.max()) + 1
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                   logits_to_keep=torch.arange(lo, hi)).logits
    out[:, lo + 1 : hi + 1] = F.cross_entropy(logits.float().transpose(1, 2), input_ids[:, lo + 1 : hi + 1], reduction="none")
    return out * positions


def _mixed_batch(vocab, seed=0):
    """A short sample (short prompt, short response) next to a long one (long prompt, long response)."""
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (9, 57, 23)]
    targets = [list(range(4, 9)), list(range(30, 57)), list(range(2, 12))]  # response spans end at different places
    return pad_batch(seqs, targets, 0), seqs, targets


def _rel(a, b):
    return float(((a - b).abs() / b.abs().clamp_min(1e-12)).max())


def _head_rows(model):
    """Record the number of rows of every output-head call (list filled by a forward hook)."""
    from leaf.heads import output_head

    output_head(model)  # its one-time check against the model's own logits runs first
    seen = []

    def hook(module, args, out):
        if out.shape[-1] > 0:  # not the capture of the hidden states, which computes no logits
            seen.append(args[0].reshape(-1, args[0].shape[-1]).shape[0])

    return seen, model.get_output_embeddings().register_forward_hook(hook)


@pytest.mark.parametrize("chunk", [None, 4])
def test_chunked_head_equals_previous_implementation_on_mixed_lengths(tiny_llama, chunk):
    (ids, att, tgt), _, _ = _mixed_batch(tiny_llama.config.vocab_size)
    want_sal, want_loss = _old_embedding_saliency(tiny_llama, ids, att, tgt)
    seen, handle = _head_rows(tiny_llama)
    try:
        sal, loss = embedding_saliency(tiny_llama, ids, att, tgt, chunk_size=chunk)
    finally:
        handle.remove()
    assert _rel(loss, want_loss) <= 1e-5
    nz = want_sal > 0
    assert (sal[~nz] == 0).all() and _rel(sal[nz], want_sal[nz]) <= 1e-5
    # the head saw only the samples' own predicting positions (5 + 27 + 10), never a [lo, hi) range x batch
    n = int(tgt.sum())
    if chunk:
        assert max(seen) <= chunk and sum(seen) == 2 * n  # forward + the backward's recomputation
    else:
        assert sum(seen) == 2 * n


def test_token_surprisal_equals_previous_implementation_on_mixed_lengths(tiny_llama, monkeypatch):
    from leaf.detect.saliency import token_surprisal

    (ids, att, tgt), _, _ = _mixed_batch(tiny_llama.config.vocab_size, seed=1)
    want = _old_token_surprisal(tiny_llama, ids, att, tgt)
    got = token_surprisal(tiny_llama, ids, att, tgt)
    assert (got[want == 0] == 0).all()
    assert _rel(got[want > 0], want[want > 0]) <= 1e-5
    # an element budget of 3 positions x vocabulary bounds the logits held at once
    import leaf.heads

    monkeypatch.setattr(leaf.heads, "LOSS_CHUNK_ELEMENTS", 3 * tiny_llama.config.vocab_size)
    seen, handle = _head_rows(tiny_llama)
    try:
        again = token_surprisal(tiny_llama, ids, att, tgt)
    finally:
        handle.remove()
    assert max(seen) == 3 and sum(seen) == int(tgt.sum())
    torch.testing.assert_close(again, got, rtol=1e-6, atol=0)


def test_gradient_checkpointing_gives_equal_results(tiny_llama):
    (ids, att, tgt), _, _ = _mixed_batch(tiny_llama.config.vocab_size, seed=2)
    sal, loss = embedding_saliency(tiny_llama, ids, att, tgt)
    layer = tiny_llama.model.layers[0]
    sal_gc, loss_gc = embedding_saliency(tiny_llama, ids, att, tgt, gradient_checkpointing=True)
    assert "forward" not in layer.__dict__  # the wrapper is removed afterwards
    torch.testing.assert_close(sal_gc, sal, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(loss_gc, loss, rtol=1e-6, atol=0)
    assert all(p.grad is None for p in tiny_llama.parameters())


def test_gradient_checkpointing_recomputes_the_layers(tiny_llama):
    """Each decoder layer's MLP starts twice (forward + recomputation) with checkpointing, once without.

    (A pre-hook: the recomputation stops early, inside the MLP, once the last saved tensor is rebuilt.)"""
    (ids, att, tgt), _, _ = _mixed_batch(tiny_llama.config.vocab_size, seed=2)
    runs = []
    mlp = tiny_llama.model.layers[0].mlp
    embedding_saliency(tiny_llama, ids, att, tgt)  # the one-time head check is not counted
    handle = mlp.register_forward_pre_hook(lambda *a: runs.append(1))
    try:
        embedding_saliency(tiny_llama, ids, att, tgt)
        plain = len(runs)
        embedding_saliency(tiny_llama, ids, att, tgt, gradient_checkpointing=True)
    finally:
        handle.remove()
    assert plain == 1 and len(runs) - plain == 2


def _tiny_gemma3(vocab, softcap):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=256, sliding_window=8,
        final_logit_softcapping=softcap, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(3)
    return Gemma3ForCausalLM(config).eval()


def test_gemma3_final_logit_softcapping_is_applied(tiny_llama):
    vocab = tiny_llama.config.vocab_size
    (ids, att, tgt), _, _ = _mixed_batch(vocab, seed=4)
    model = _tiny_gemma3(vocab, softcap=0.5)  # a tiny cap: very different logits without it
    from leaf.detect.saliency import token_surprisal

    want_sal, want_loss = _old_embedding_saliency(model, ids, att, tgt)
    sal, loss = embedding_saliency(model, ids, att, tgt)
    assert _rel(loss, want_loss) <= 1e-5
    nz = want_sal > 0
    assert _rel(sal[nz], want_sal[nz]) <= 1e-5
    want = _old_token_surprisal(model, ids, att, tgt)
    got = token_surprisal(model, ids, att, tgt)
    assert _rel(got[want > 0], want[want > 0]) <= 1e-5


def test_unknown_final_logit_transform_is_refused(llama_tok):
    from transformers import LlamaForCausalLM

    from leaf.tiny import build_model

    class Scaled(LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2.0
            return out

    base = build_model(llama_tok, hidden_size=16, num_layers=1)
    model = Scaled(base.config).eval()
    ids, targets = _item(llama_tok, *PAIRS[1])
    with pytest.raises(NotImplementedError, match="final transform"):
        embedding_saliency(model, *pad_batch([ids], [targets], llama_tok.pad_token_id))


def test_right_padded_batches_drop_the_padding_mask(tiny_llama):
    """Right padding under causal attention: the model gets no mask (SDPA's is_causal path, no (B, 1, T, T)
    mask), with results equal to the padding-masked ones; left padding or holes keep the mask."""
    from leaf.heads import causal_attention_mask

    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert causal_attention_mask(right) is None and causal_attention_mask(torch.ones(2, 3, dtype=torch.long)) is None
    for kept in (torch.tensor([[0, 1, 1], [1, 1, 1]]), torch.tensor([[1, 0, 1]])):
        assert causal_attention_mask(kept) is kept
    (ids, att, tgt), _, _ = _mixed_batch(tiny_llama.config.vocab_size, seed=2)
    masks = []
    handle = tiny_llama.model.register_forward_pre_hook(lambda m, a, kw: masks.append(kw.get("attention_mask")), with_kwargs=True)
    try:
        sal, loss = embedding_saliency(tiny_llama, ids, att, tgt)
    finally:
        handle.remove()
    assert masks and all(m is None for m in masks)
    want_sal, want_loss = _old_embedding_saliency(tiny_llama, ids, att, tgt)  # with the padding mask
    assert _rel(loss, want_loss) <= 1e-5
    nz = want_sal > 0
    assert (sal[~nz] == 0).all() and _rel(sal[nz], want_sal[nz]) <= 1e-5


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3-sliding"])
def test_packed_equals_padded(llama_tok, tiny_llama, arch):
    """One packed row (position ids restarting, no attention mask) gives every sample's padded saliency and loss;
    the surprisal too. Gemma-3 with a sliding window shorter than the samples checks the window stays per sample."""
    from leaf.detect.saliency import pack_batch, token_surprisal
    from leaf.tiny import build_model

    if arch == "llama":
        model = tiny_llama
    elif arch == "qwen2":
        model = build_model(llama_tok, arch="qwen2", hidden_size=32, num_layers=2, seed=5)
    else:
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        torch.manual_seed(0)
        model = Gemma3ForCausalLM(Gemma3TextConfig(
            vocab_size=len(llama_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=8,
            layer_types=["sliding_attention", "full_attention"], pad_token_id=llama_tok.pad_token_id))
    model.eval()
    items = [_item(llama_tok, i, r) for i, r in PAIRS]
    seqs, targets = [x[0] for x in items], [x[1] for x in items]
    ids, att, tgt = pad_batch(seqs, targets, llama_tok.pad_token_id)
    want, want_loss = embedding_saliency(model, ids, att, tgt)
    p_ids, p_att, p_tgt, rows, starts = pack_batch(seqs, targets, llama_tok.pad_token_id)
    assert p_ids.shape == (1, sum(len(s) for s in seqs))
    got, got_loss = embedding_saliency(model, p_ids, p_att, p_tgt, packed=rows)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-6)
    for b, (seq, start) in enumerate(zip(seqs, starts)):
        torch.testing.assert_close(got[0, start:start + len(seq)], want[b, :len(seq)], rtol=1e-5, atol=1e-6)
    s_want = token_surprisal(model, ids, att, tgt)
    s_got = token_surprisal(model, p_ids, p_att, p_tgt, packed=rows)
    for b, (seq, start) in enumerate(zip(seqs, starts)):
        torch.testing.assert_close(s_got[0, start:start + len(seq)], s_want[b, :len(seq)], rtol=1e-5, atol=1e-6)
    # a sample's own first token can never be a target in a packed row
    bad = p_tgt.clone()
    bad[0, starts[1]] = True
    with pytest.raises(ValueError, match="first token of a packed sample"):
        embedding_saliency(model, p_ids, p_att, bad, packed=rows)
