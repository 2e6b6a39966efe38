"""The cross-tokenizer loss against a float64 reference written here, and against today's KL for one tokenizer."""

from __future__ import annotations

import pytest
import torch

from leaf.distill.aligned import TopKRows, aligned_loss
from leaf.distill.divergences import Divergence
from leaf.distill.losses import forward_kl


def _case(seed=0):
    g = torch.Generator().manual_seed(seed)
    # 4 groups: 1:1, student 2 : teacher 1, 1 : 3, 2 : 2
    s_group = torch.tensor([0, 1, 1, 2, 3, 3])
    t_group = torch.tensor([0, 1, 2, 2, 2, 3, 3])
    vs, vt = 11, 9
    zs = torch.randn(len(s_group), vs, generator=g) * 2
    zt = torch.randn(len(t_group), vt, generator=g) * 2
    ys = torch.randint(0, vs, (len(s_group),), generator=g)
    yt = torch.randint(0, vt, (len(t_group),), generator=g)
    shared_s = torch.tensor([0, 2, 3, 7, 10])
    shared_t = torch.tensor([1, 0, 4, 8, 5])
    w = torch.rand(4, generator=g)
    return zs, zt, s_group, t_group, ys, yt, w, shared_s, shared_t


def _reference(zs, zt, s_group, t_group, ys, yt, w, shared_s, shared_t, method, T, top_k=None):
    """Group by group in float64, plain autograd. gold: each side's outcomes are "the first token is y" for
    every shared y other than the actual first token a, "a then not the group's other tokens", "the group's
    text", and everything else. ``top_k``: a cached teacher, whose shared ids are only those among its top k
    at the group's first row and its actual first token (the rest is everything else)."""
    total = 0.0
    for k in range(len(w)):
        vecs, parts = [], []
        pairs_s, pairs_t = shared_s, shared_t
        if top_k is not None:
            r0 = int((t_group == k).nonzero()[0])
            listed = set(zt[r0].topk(top_k).indices.tolist()) | {int(yt[r0])}
            keep = torch.tensor([int(j) in listed for j in shared_t])
            pairs_s, pairs_t = shared_s[keep], shared_t[keep]
        for z, grp, y, ids in ((zs, s_group, ys, pairs_s), (zt, t_group, yt, pairs_t)):
            rows = (grp == k).nonzero().squeeze(1).tolist()
            p = torch.softmax(z.double() / T, -1)
            v = p[rows[0]].clone()
            cont = torch.ones((), dtype=torch.float64)
            for r in rows[1:]:
                v = v * p[r, y[r]]
                cont = cont * p[r, y[r]]
            vecs.append((v, ids))
            a = int(y[rows[0]])
            first = p[rows[0]]
            slots = torch.stack([first[j] * (1 - cont) if int(j) == a else first[j] for j in ids])
            text = first[a] * cont
            parts.append([slots, text, 1 - slots.sum() - text, len(rows), a, ids])
        # a side writing the group in one shared token: that shared slot is the text on both sides
        join = {[int(j) for j in ids].index(a) for *_, n_rows, a, ids in parts if n_rows == 1 and a in ids.tolist()}
        for part in parts:
            for i in join:
                part[1] = part[1] + part[0][i]
                part[0] = torch.cat([part[0][:i], part[0].new_zeros(1), part[0][i + 1:]])
        parts = [torch.cat([sl, t.view(1), r.view(1)]).clamp(min=1e-38) for sl, t, r, *_ in parts]
        (q, si), (p, ti) = vecs
        if method == "uld":
            a, b = q.sort(descending=True).values, p.sort(descending=True).values
            n = max(len(a), len(b))
            a = torch.cat([a, a.new_zeros(n - len(a))])
            b = torch.cat([b, b.new_zeros(n - len(b))])
            d = (a - b).abs().sum()
        else:
            qb, pb = parts
            d = (pb * (pb.clamp(min=1e-38).log() - qb.clamp(min=1e-38).log())).sum()
        total = total + w[k].double() * T**2 * d
    return total


@pytest.mark.parametrize("method", ["gold", "uld"])
@pytest.mark.parametrize("T", [1.0, 2.0])
@pytest.mark.parametrize("chunk", [None, 2])
def test_values_and_gradients_equal_a_float64_reference(method, T, chunk):
    zs, zt, s_group, t_group, ys, yt, w, shared_s, shared_t = _case()
    a = zs.clone().requires_grad_(True)
    parts = aligned_loss(a, zt, s_group, t_group, ys, yt, w, shared_s, shared_t, method=method, temperature=T,
                         chunk_rows=chunk)
    parts.loss.backward()
    b = zs.double().clone().requires_grad_(True)
    ref = _reference(b, zt, s_group, t_group, ys, yt, w, shared_s, shared_t, method, T)
    ref.backward()
    assert float(parts.loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-4, atol=1e-7)
    assert parts.per_group.shape == (4,)


@pytest.mark.parametrize("divergence", ["forward-kl", "jsd"])
def test_one_tokenizer_equals_the_same_tokenizer_loss(divergence):
    g = torch.Generator().manual_seed(3)
    n, v = 7, 13
    zs = torch.randn(n, v, generator=g) * 3
    zt = torch.randn(n, v, generator=g) * 3
    w = torch.rand(n, generator=g)
    groups = torch.arange(n)
    ids = torch.arange(v)
    a = zs.clone().requires_grad_(True)
    spec = Divergence(divergence, beta=0.3)
    parts = aligned_loss(a, zt, groups, groups, groups, groups, w, ids, ids, temperature=1.5, divergence=spec,
                         chunk_rows=3)
    parts.loss.backward()
    b = zs.clone().requires_grad_(True)
    if divergence == "forward-kl":
        ref = (w * forward_kl(zt, b, 1.5)).sum()
    else:
        from leaf.distill.losses import distill_loss, DenseTeacher

        ref = distill_loss(b, torch.arange(n), DenseTeacher(zt, torch.arange(n)), w, temperature=1.5,
                           divergence=spec).loss
    ref.backward()
    assert float(parts.loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)


def _cached(zt, yt, T, k):
    lp = torch.log_softmax(zt.double() / T, -1)
    top = lp.topk(k, dim=-1)
    return TopKRows(top.values.float(), top.indices, lp.gather(-1, yt.unsqueeze(-1)).squeeze(-1).float())


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("T", [1.0, 2.0])
@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_topk_cache_equals_the_reference_over_its_listed_ids(k, T, chunk, seed):
    zs, zt, s_group, t_group, ys, yt, w, shared_s, shared_t = _case(seed)
    yt[0] = zt[0].argmin()  # an actual first token outside the top k
    a = zs.clone().requires_grad_(True)
    parts = aligned_loss(a, _cached(zt, yt, T, k), s_group, t_group, ys, yt, w, shared_s, shared_t,
                         temperature=T, chunk_rows=chunk)
    parts.loss.backward()
    b = zs.double().clone().requires_grad_(True)
    ref = _reference(b, zt, s_group, t_group, ys, yt, w, shared_s, shared_t, "gold", T, top_k=k)
    ref.backward()
    assert float(parts.loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("divergence", ["forward-kl", "reverse-kl", "jsd", "tvd"])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_cache_of_the_whole_vocabulary_equals_the_live_teacher(divergence, seed):
    zs, zt, s_group, t_group, ys, yt, w, shared_s, shared_t = _case(seed)
    spec = Divergence(divergence, beta=0.3)
    grads = []
    for teacher in (zt, _cached(zt, yt, 1.5, zt.shape[-1])):
        a = zs.clone().requires_grad_(True)
        parts = aligned_loss(a, teacher, s_group, t_group, ys, yt, w, shared_s, shared_t, temperature=1.5,
                             divergence=spec, chunk_rows=3)
        parts.loss.backward()
        grads.append((parts.loss.detach(), parts.per_group, a.grad))
    (l0, g0, d0), (l1, g1, d1) = grads
    assert float(l1) == pytest.approx(float(l0), rel=1e-5)
    torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(d1, d0, rtol=1e-4, atol=1e-7)


def _uld_topk_reference(zs, zt, s_group, t_group, ys, yt, w, T, k):
    """uld against a teacher known to its k largest merged probabilities per group, the rest one bucket; float64."""
    total = 0.0
    for g in range(len(w)):
        vecs = []
        for z, grp, y in ((zs, s_group, ys), (zt, t_group, yt)):
            rows = (grp == g).nonzero().squeeze(1).tolist()
            p = torch.softmax(z.double() / T, -1)
            v = p[rows[0]].clone()
            for r in rows[1:]:
                v = v * p[r, y[r]]
            vecs.append(v.sort(descending=True).values)
        a, b = vecs
        a = torch.cat([a, a.new_zeros(max(0, k - len(a)))])
        total = total + w[g].double() * T**2 * ((a[:k] - b[:k]).abs().sum() + (a[k:].sum() - b[k:].sum()).abs())
    return total


@pytest.mark.parametrize("k", [1, 4, 9, 12])
@pytest.mark.parametrize("T", [1.0, 2.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_uld_from_a_topk_cache_equals_its_reference_and_bounds_the_live_distance(k, T, seed):
    zs, zt, s_group, t_group, ys, yt, w, shared_s, shared_t = _case(seed)
    k = min(k, zt.shape[-1])  # 9 = the teacher's whole vocabulary (the student's is 11)
    a = zs.clone().requires_grad_(True)
    parts = aligned_loss(a, _cached(zt, yt, T, k), s_group, t_group, ys, yt, w, shared_s, shared_t, method="uld",
                         temperature=T, chunk_rows=2)
    parts.loss.backward()
    b = zs.double().clone().requires_grad_(True)
    ref = _uld_topk_reference(b, zt, s_group, t_group, ys, yt, w, T, k)
    ref.backward()
    assert float(parts.loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-4, atol=1e-7)
    live = aligned_loss(zs, zt, s_group, t_group, ys, yt, w, shared_s, shared_t, method="uld", temperature=T)
    if k == zt.shape[-1]:  # the whole vocabulary: the live distance, group by group
        torch.testing.assert_close(parts.per_group, live.per_group, rtol=1e-5, atol=1e-7)
    else:  # a lumped tail never adds distance (triangle inequality), and here it removes some
        assert (parts.per_group <= live.per_group + 1e-6).all()
        assert float(parts.loss.detach()) < float(live.loss)
