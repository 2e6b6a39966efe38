"""The distillation losses against hand computations and independent autograd formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from leaf.distill.losses import (
    DenseTeacher,
    TopKTeacher,
    distill_loss,
    forward_kl,
    hybrid_loss,
    hybrid_token_weights,
    loss_rows,
    topk_error_bound,
)


def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_forward_kl_equals_hand_computation(temperature):
    t = [2.0, 0.0, -1.0]
    s = [0.5, 1.0, 0.0]
    p = _softmax([x / temperature for x in t])
    q = _softmax([x / temperature for x in s])
    expected = temperature**2 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    got = forward_kl(torch.tensor([t]), torch.tensor([s]), temperature)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # KL of a distribution with itself is 0, and the direction matters
    assert forward_kl(torch.tensor(t), torch.tensor(t)).item() == pytest.approx(0.0, abs=1e-7)
    reverse = forward_kl(torch.tensor([s]), torch.tensor([t]), temperature).item()
    assert abs(reverse - expected) > 1e-3


def _reference(student, teacher, rows, w_kl, labels=None, w_ce=None, temperature=1.0, vocab=None):
    """Plain autograd: full fp32 log-softmax of everything at once."""
    vocab = vocab or student.shape[-1]
    s = student.reshape(-1, student.shape[-1])[rows, :vocab]
    t = teacher.reshape(-1, teacher.shape[-1])[rows, :vocab]
    kl = forward_kl(t, s, temperature)
    loss = (w_kl * kl).sum()
    if labels is not None:
        ce = F.cross_entropy(s.float(), labels, reduction="none")
        loss = loss + (w_ce * ce).sum()
    return loss, kl


@pytest.mark.parametrize("temperature", [1.0, 1.7])
@pytest.mark.parametrize("with_ce", [False, True])
def test_chunked_equals_unchunked_values_and_gradients(temperature, with_ce):
    g = torch.Generator().manual_seed(0)
    B, L, V = 3, 7, 11
    student = torch.randn(B, L, V, generator=g) * 3
    teacher = torch.randn(B, L, V + 2, generator=g) * 3  # two padded embedding rows
    rows = torch.tensor([0, 1, 2, 5, 8, 9, 10, 13, 15, 16, 20])
    w_kl = torch.rand(rows.numel(), generator=g)
    labels = torch.randint(0, V, (rows.numel(),), generator=g) if with_ce else None
    w_ce = torch.rand(rows.numel(), generator=g) if with_ce else None

    ref_in = student.clone().requires_grad_(True)
    ref_loss, ref_kl = _reference(ref_in, teacher, rows, w_kl, labels, w_ce, temperature, vocab=V)
    ref_loss.backward()

    results = []
    for chunk in (None, 1, 3, 4, 100):
        x = student.clone().requires_grad_(True)
        out = distill_loss(
            x, rows, DenseTeacher(teacher.reshape(B * L, -1), rows), w_kl,
            labels=labels, w_ce=w_ce, temperature=temperature, chunk_size=chunk, vocab_size=V,
        )
        out.loss.backward()
        results.append((out.loss.detach(), x.grad.clone(), out.kl))
    for loss, grad, kl in results:
        torch.testing.assert_close(loss, ref_loss.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, ref_in.grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(kl, ref_kl.detach(), rtol=1e-5, atol=1e-6)
    # rows without a loss token get exactly zero gradient
    untouched = torch.ones(B * L, dtype=torch.bool)
    untouched[rows] = False
    assert results[2][1].reshape(B * L, V)[untouched].abs().max() == 0


def test_bf16_logits_gradient_close_to_fp32():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 5, 13, generator=g)
    t = torch.randn(2, 5, 13, generator=g)
    rows = torch.arange(10)
    w = torch.full((10,), 0.1)
    x32 = s.clone().requires_grad_(True)
    distill_loss(x32, rows, DenseTeacher(t.view(10, 13), rows), w, chunk_size=3).loss.backward()
    x16 = s.to(torch.bfloat16).requires_grad_(True)
    out16 = distill_loss(x16, rows, DenseTeacher(t.to(torch.bfloat16).view(10, 13), rows), w, chunk_size=3)
    out16.loss.backward()
    assert x16.grad.dtype == torch.bfloat16
    torch.testing.assert_close(x16.grad.float(), x32.grad, rtol=0.05, atol=2e-3)


def test_masks_and_lambda_on_hand_made_batch():
    # 3 rows: two originals, one counterfactual. -100 marks prompt and padding.
    labels = torch.tensor(
        [
            [-100, -100, 5, 6, 7, -100],  # prompt 2 tokens, 3 response tokens, 1 pad
            [-100, -100, -100, -100, 4, 2],  # loss_start cuts the first response tokens
            [-100, 3, 3, -100, -100, -100],  # counterfactual, 2 loss tokens, padding
        ]
    )
    rows, targets = loss_rows(labels)
    # position t-1 predicts token t; row-major order
    assert rows.tolist() == [1, 2, 3, 6 + 3, 6 + 4, 12 + 0, 12 + 1]
    assert targets.tolist() == [5, 6, 7, 4, 2, 3, 3]

    g = torch.Generator().manual_seed(2)
    student = torch.randn(3, 6, 9, generator=g)
    teacher = torch.randn(3, 6, 9, generator=g)
    is_cf_row = torch.tensor([False, False, True])
    is_cf = is_cf_row[rows // 6]
    lam, alpha = 0.3, 0.25
    w_kl, w_ce = hybrid_token_weights(is_cf, lam, n_kd=5, n_cd=2, alpha=alpha)
    out = distill_loss(student, rows, DenseTeacher(teacher.view(18, 9), rows), w_kl, labels=targets, w_ce=w_ce)

    # independent: loop over the hand-listed loss tokens
    kd_tokens = [(0, 1, 5), (0, 2, 6), (0, 3, 7), (1, 3, 4), (1, 4, 2)]  # (row, predicting position, target)
    cd_tokens = [(2, 0, 3), (2, 1, 3)]

    def kl(b, p):
        return forward_kl(teacher[b, p], student[b, p]).item()

    def ce(b, p, y):
        return -torch.log_softmax(student[b, p], -1)[y].item()

    kd = sum(kl(b, p) for b, p, _ in kd_tokens) / 5
    cd = sum(kl(b, p) for b, p, _ in cd_tokens) / 2
    ce_mean = sum(ce(b, p, y) for b, p, y in kd_tokens + cd_tokens) / 7
    expected = lam * kd + (1 - lam) * cd + alpha * ce_mean
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)

    # the dense reference form agrees
    loss_mask = torch.zeros(3, 6, dtype=torch.bool)
    loss_mask.view(-1)[rows] = True
    per_kl = forward_kl(teacher, student)
    per_ce = torch.zeros(3, 6)
    per_ce.view(-1)[rows] = out.ce
    assert hybrid_loss(per_kl, loss_mask, is_cf_row, lam, per_ce, alpha).item() == pytest.approx(expected, rel=1e-5)
    # lambda = 1 is plain KD over the originals only
    w1, _ = hybrid_token_weights(is_cf, 1.0, n_kd=5, n_cd=2)
    plain = distill_loss(student, rows, DenseTeacher(teacher.view(18, 9), rows), w1).loss.item()
    assert plain == pytest.approx(kd, rel=1e-5)


def test_token_weights_split_across_microbatches_sum_to_full_batch():
    g = torch.Generator().manual_seed(3)
    student = torch.randn(4, 5, 7, generator=g)
    teacher = torch.randn(4, 5, 7, generator=g)
    labels = torch.randint(0, 7, (4, 5), generator=g)
    labels[:, :2] = -100
    labels[3, 4] = -100
    is_cf_row = torch.tensor([False, True, False, True])

    def part(idx):
        lab = labels[idx]
        rows, _ = loss_rows(lab)
        cf = is_cf_row[idx][rows // 5]
        n_kd = int(((labels[:, 1:] != -100) & ~is_cf_row[:, None]).sum())
        n_cd = int(((labels[:, 1:] != -100) & is_cf_row[:, None]).sum())
        w, _ = hybrid_token_weights(cf, 0.5, n_kd, n_cd)
        return distill_loss(student[idx], rows, DenseTeacher(teacher[idx].reshape(-1, 7), rows), w).loss

    whole = part(torch.arange(4))
    split = sum(part(torch.tensor([i])) for i in range(4))
    torch.testing.assert_close(split, whole)


def test_topk_cache_exact_when_k_is_vocab_and_bounded_otherwise():
    g = torch.Generator().manual_seed(4)
    N, V = 20, 50
    student = torch.randn(N, V, generator=g) * 2
    teacher = torch.randn(N, V, generator=g) * 4  # peaked like a real LM
    rows = torch.arange(N)
    w = torch.ones(N)
    T = 1.5
    exact = distill_loss(student, rows, DenseTeacher(teacher, rows), w, temperature=T).kl
    lp = torch.log_softmax(teacher / T, -1)
    full_lp, full_ids = lp.topk(V, -1)
    same = distill_loss(student, rows, TopKTeacher(full_lp, full_ids), w, temperature=T).kl
    torch.testing.assert_close(same, exact, rtol=1e-5, atol=1e-5)

    k_lp, k_ids = lp.topk(8, -1)
    x = student.clone().requires_grad_(True)
    approx = distill_loss(x, rows, TopKTeacher(k_lp, k_ids), w, temperature=T)
    gap = exact - approx.kl
    bound = topk_error_bound(student, k_ids, k_lp, T)
    assert (gap >= -1e-5).all()
    assert (gap <= bound + 1e-5).all()
    assert gap.max() > 1e-4  # the approximation is not exact with k < V

    # gradient = T * (q - p_eff) with the tail spread like the student's tail (checked against autograd of the bucket KL)
    y = student.clone().requires_grad_(True)
    lq = torch.log_softmax(y / T, -1)
    p_top = k_lp.exp()
    q_top = lq.gather(-1, k_ids).exp()
    p_tail = 1 - p_top.sum(-1)
    q_tail = 1 - q_top.sum(-1)
    bucket = T**2 * ((p_top * (k_lp - lq.gather(-1, k_ids))).sum(-1) + p_tail * (p_tail.log() - q_tail.log()))
    torch.testing.assert_close(approx.kl, bucket.detach(), rtol=1e-5, atol=1e-5)
    bucket.sum().backward()
    approx.loss.backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------
# chunked_head_kl: the same loss from hidden states, no full logits.
# ----------------------------------------------------------------------------


def _head_case(seed=0, N=13, H=6, V=17, Vt=19, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=g, dtype=dtype)
    weight = torch.randn(V, H, generator=g, dtype=dtype)
    t_hidden = torch.randn(N, H + 2, generator=g, dtype=dtype)
    t_weight = torch.randn(Vt, H + 2, generator=g, dtype=dtype)  # teacher with padded vocabulary, other width
    w_kl = torch.rand(N, generator=g)
    labels = torch.randint(0, V, (N,), generator=g)
    w_ce = torch.rand(N, generator=g)
    return hidden, weight, t_hidden, t_weight, w_kl, labels, w_ce


@pytest.mark.parametrize("temperature", [1.0, 1.7])
@pytest.mark.parametrize("with_ce", [False, True])
@pytest.mark.parametrize("teacher_kind", ["fn", "dense", "topk"])
def test_chunked_head_kl_equals_distill_loss_on_full_logits(temperature, with_ce, teacher_kind):
    from leaf.distill.losses import chunked_head_kl

    hidden, weight, t_hidden, t_weight, w_kl, labels, w_ce = _head_case()
    V = weight.shape[0]
    t_logits = t_hidden @ t_weight.T
    rows = torch.arange(hidden.shape[0])
    topk = torch.log_softmax(t_logits[:, :V] / temperature, -1).topk(5, dim=-1)
    make = {
        "fn": lambda: (lambda sl: t_hidden[sl] @ t_weight.T),
        "dense": lambda: DenseTeacher(t_logits, rows),
        "topk": lambda: TopKTeacher(topk.values, topk.indices),
    }[teacher_kind]
    kw = dict(labels=labels if with_ce else None, w_ce=w_ce if with_ce else None, temperature=temperature, vocab_size=V)

    h_ref, w_ref = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    ref_teacher = DenseTeacher(t_logits, rows) if teacher_kind == "fn" else make()
    ref = distill_loss(h_ref @ w_ref.T, rows, ref_teacher, w_kl, chunk_size=None, **kw)
    ref.loss.backward()
    for chunk, budget in ((None, None), (1, None), (4, None), (100, 3 * V)):
        h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        got = chunked_head_kl(h, w, make(), w_kl, chunk_size=chunk, max_elements=budget, **kw)
        got.loss.backward()
        assert got.loss.item() == pytest.approx(ref.loss.item(), rel=1e-5)
        torch.testing.assert_close(got.kl, ref.kl, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got.ce, ref.ce, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(h.grad, h_ref.grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(w.grad, w_ref.grad, rtol=1e-5, atol=1e-6)


def test_chunked_head_kl_never_projects_more_than_a_chunk():
    """The student head and the teacher see at most ``chunk`` rows per call; backward recomputes each chunk once."""
    from leaf.distill.losses import chunked_head_kl

    hidden, weight, t_hidden, t_weight, w_kl, _, _ = _head_case(N=23)
    student_rows, teacher_rows = [], []

    def head(h):
        student_rows.append(h.shape[0])
        return h @ weight.T

    def teacher(sl):
        teacher_rows.append(sl.stop - sl.start)
        return t_hidden[sl] @ t_weight.T

    h = hidden.clone().requires_grad_(True)
    parts = chunked_head_kl(h, head, teacher, w_kl, chunk_size=5)
    assert max(student_rows) == 5 and sum(student_rows) == 23
    parts.loss.backward()
    assert max(student_rows) == 5 and sum(student_rows) == 2 * 23  # recomputed in backward, not kept
    assert max(teacher_rows) == 5 and sum(teacher_rows) == 2 * 23
    with torch.no_grad():  # no backward to come: nothing is recomputed
        student_rows.clear()
        chunked_head_kl(hidden, head, teacher, w_kl, chunk_size=5)
        assert sum(student_rows) == 23


# ----------------------------------------------------------------------------
# The fused head + loss (gradients computed chunk by chunk in the forward pass).
# ----------------------------------------------------------------------------


class _Head:
    """An OutputHead-like head: a ``torch.nn.Linear`` plus Cohere / Granite / Gemma-style final transforms."""

    def __init__(self, module, multiply=None, divide=None, softcap=None):
        self.module, self.multiply, self.divide, self.softcap = module, multiply, divide, softcap
        self.vocab = module.out_features

    def __call__(self, h):
        z = self.module(h)
        if self.multiply is not None:
            z = z * self.multiply
        if self.divide is not None:
            z = z / self.divide
        if self.softcap is not None:
            z = torch.tanh(z / self.softcap) * self.softcap
        return z


def _full_logits_reference(head, hidden, t_logits, w_kl, vocab, temperature, labels=None, w_ce=None):
    """Independent reference: full (N, V) logits, plain autograd log-softmax KL (+ cross-entropy)."""
    z = head(hidden)[:, :vocab]
    loss = (w_kl * forward_kl(t_logits[:, :vocab], z, temperature)).sum()
    if labels is not None:
        loss = loss + (w_ce * F.cross_entropy(z.float(), labels, reduction="none")).sum()
    return loss


def _close(got, want):
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()) + 1e-12)


@pytest.mark.parametrize("transform", [(None, None, None), (2.0, None, None), (None, 3.0, None), (None, None, 5.0)])
@pytest.mark.parametrize("temperature, with_ce", [(1.0, False), (1.0, True), (1.7, False), (1.7, True)])
@pytest.mark.parametrize("teacher_kind", ["fn", "dense", "topk"])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_head_kl_equals_checkpointed_path_and_full_logits(transform, temperature, with_ce, teacher_kind, bias):
    """Loss, per-token values and gradients (hidden, weight, bias) of the fused path equal the checkpointed
    implementation it replaces and, for live teachers, an independent full-logits autograd reference (1e-5)."""
    from leaf.distill.losses import _linear_head, chunked_head_kl

    torch.manual_seed(0)
    N, H, V, Vt = 23, 6, 17, 19
    lin = torch.nn.Linear(H, V, bias=bias)
    head = _Head(lin, *transform)
    assert _linear_head(head) is not None
    hidden = torch.randn(N, H) * 3
    t_logits = torch.randn(N, H + 2) @ torch.randn(Vt, H + 2).T
    w_kl, labels, w_ce = torch.rand(N), torch.randint(0, V - 2, (N,)), torch.rand(N)
    vocab, rows = V - 2, torch.arange(N)  # a padded student row and the teacher's extra rows are not compared
    topk = torch.log_softmax(t_logits[:, :vocab] / temperature, -1).topk(5, dim=-1)
    make = {
        "fn": lambda: (lambda sl: t_logits[sl]),
        "dense": lambda: DenseTeacher(t_logits, rows),
        "topk": lambda: TopKTeacher(topk.values, topk.indices),
    }[teacher_kind]
    kw = {"labels": labels if with_ce else None, "w_ce": w_ce if with_ce else None, "temperature": temperature, "vocab_size": vocab}
    results = []
    for fused in (True, False):
        lin.zero_grad(set_to_none=True)
        h = hidden.clone().requires_grad_(True)
        parts = chunked_head_kl(h, head, make(), w_kl, chunk_size=5, fused=fused, **kw)
        (0.7 * parts.loss).backward()  # a scaled loss, as gradient accumulation gives
        results.append([parts.loss.detach(), parts.kl, parts.ce, h.grad, lin.weight.grad] + ([lin.bias.grad] if bias else []))
    assert lin.weight.grad[vocab:].abs().max() == 0
    for got, want in zip(*results):
        _close(got, want)
    if teacher_kind != "topk":
        lin.zero_grad(set_to_none=True)
        h = hidden.clone().requires_grad_(True)
        ref = _full_logits_reference(head, h, t_logits, w_kl, vocab, temperature, kw["labels"], kw["w_ce"])
        (0.7 * ref).backward()
        _close(results[0][0], ref.detach())
        for got, want in zip(results[0][3:], [h.grad, lin.weight.grad] + ([lin.bias.grad] if bias else [])):
            _close(got, want)


def test_fused_head_kl_with_tied_embeddings_equals_full_logits():
    """Tied input embedding / output head: the head's gradient adds to the embedding's (one parameter)."""
    from leaf.distill.losses import chunked_head_kl

    torch.manual_seed(1)
    N, H, V = 19, 8, 29
    emb = torch.nn.Embedding(V, H)
    lin = torch.nn.Linear(H, V, bias=False)
    lin.weight = emb.weight
    mix = torch.nn.Linear(H, H)
    ids, t_logits, w_kl = torch.randint(0, V, (N,)), torch.randn(N, V) * 2, torch.rand(N)
    labels, w_ce = torch.randint(0, V, (N,)), torch.rand(N)
    grads = []
    for fused in (True, False, None):  # None: the full-logits reference
        emb.zero_grad(set_to_none=True)
        mix.zero_grad(set_to_none=True)
        hidden = torch.tanh(mix(emb(ids)))
        if fused is None:
            loss = _full_logits_reference(lin, hidden, t_logits, w_kl, V, 1.3, labels, w_ce)
        else:
            loss = chunked_head_kl(hidden, _Head(lin), lambda sl: t_logits[sl], w_kl, labels=labels, w_ce=w_ce,
                                   temperature=1.3, chunk_size=4, fused=fused).loss
        loss.backward()
        grads.append((loss.detach(), emb.weight.grad.clone(), mix.weight.grad.clone()))
    for got in grads[:2]:
        for g, w in zip(got, grads[2]):
            _close(g, w)


def test_fused_head_kl_projects_each_chunk_once_and_keeps_no_grad_under_no_grad():
    from leaf.distill.losses import chunked_head_kl

    torch.manual_seed(2)
    N, H, V = 23, 6, 17
    lin = torch.nn.Linear(H, V, bias=False)
    t_weight = torch.randn(V, H)
    teacher_rows = []

    def teacher(sl):
        teacher_rows.append(sl.stop - sl.start)
        return torch.randn(sl.stop - sl.start, H, generator=torch.Generator().manual_seed(sl.start)) @ t_weight.T

    h = torch.randn(N, H, requires_grad=True)
    parts = chunked_head_kl(h, _Head(lin), teacher, torch.rand(N), chunk_size=5)
    parts.loss.backward()
    assert max(teacher_rows) == 5 and sum(teacher_rows) == N  # once per chunk: no recomputation in backward
    with pytest.raises(RuntimeError, match="one backward"):
        parts2 = chunked_head_kl(h, _Head(lin), teacher, torch.rand(N), chunk_size=5)
        parts2.loss.backward(retain_graph=True)
        parts2.loss.backward()
    teacher_rows.clear()
    assert h.grad is not None and lin.weight.grad is not None
    with torch.no_grad():
        again = chunked_head_kl(h, _Head(lin), teacher, torch.rand(N), chunk_size=5)
    assert not again.loss.requires_grad and again.loss.grad_fn is None
    # a frozen head: no weight gradient is computed or returned
    lin.weight.requires_grad_(False)
    lin.weight.grad = None
    h.grad = None
    chunked_head_kl(h, _Head(lin), teacher, torch.rand(N), chunk_size=5).loss.backward()
    assert lin.weight.grad is None and h.grad is not None


def test_linear_head_refuses_hooked_or_wrapped_heads():
    """Heads the fused path cannot see through (hooks, subclasses, replaced forward) keep the checkpointed path."""
    from leaf.distill.losses import _linear_head

    lin = torch.nn.Linear(4, 7, bias=False)
    assert _linear_head(lin.weight) is not None and _linear_head(_Head(lin)) is not None
    handle = lin.register_forward_hook(lambda m, a, o: None)
    assert _linear_head(_Head(lin)) is None
    handle.remove()

    class Sub(torch.nn.Linear):
        pass

    assert _linear_head(_Head(Sub(4, 7))) is None
    lin.forward = lambda x: x
    assert _linear_head(_Head(lin)) is None
    assert _linear_head(lambda h: h) is None


def test_fused_head_kl_under_bf16_autocast_close_to_checkpointed_path():
    """Mixed precision (bf16 autocast, fp32 weights, as on a GPU): bf16 matmuls, fp32 loss math and fp32
    gradient buffers (the weight gradient added a block of vocabulary at a time); close to the checkpointed path."""
    from leaf.distill.losses import chunked_head_kl

    torch.manual_seed(3)
    N, H, V = 21, 16, 37
    lin = torch.nn.Linear(H, V, bias=False)
    hidden, t_logits, w_kl = torch.randn(N, H), torch.randn(N, V) * 2, torch.rand(N) / N
    labels, w_ce = torch.randint(0, V, (N,)), torch.rand(N) / N
    results = []
    for fused in (True, False):
        lin.zero_grad(set_to_none=True)
        h = hidden.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            parts = chunked_head_kl(h, _Head(lin), lambda sl: t_logits[sl], w_kl, labels=labels, w_ce=w_ce,
                                    temperature=1.5, chunk_size=4, fused=fused)
        parts.loss.backward()
        assert h.grad.dtype == torch.float32 and lin.weight.grad.dtype == torch.float32
        results.append((parts.loss.detach(), h.grad, lin.weight.grad))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2 * float(want.abs().max()))


@pytest.mark.parametrize("n, rows", [(64, 4), (640, 10), (4096, 16)])
def test_fused_chunks_are_a_64th_of_the_logits_within_bounds(monkeypatch, n, rows):
    from leaf.distill import losses

    V, H = 17, 3
    monkeypatch.setattr(losses, "FUSED_CHUNK_ELEMENTS", 4 * V)
    monkeypatch.setattr(losses, "HEAD_CHUNK_ELEMENTS", 16 * V)
    seen = []

    def teacher(sl):
        seen.append(sl.stop - sl.start)
        return torch.zeros(sl.stop - sl.start, V)

    losses.chunked_head_kl(torch.randn(n, H), torch.randn(V, H), teacher, torch.rand(n), chunk_size=None)
    assert max(seen) == rows and sum(seen) == n
