"""Every divergence on the three teacher paths (dense, top-k cache, fused head) against autograd references.

The references are written here from the formulas alone (probabilities, plain
``torch.log``, float64 autograd on full-vocabulary logits), independent of
leaf.distill.divergences' analytic gradients.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from leaf.config import ConfigError, make
from leaf.distill.config import DistillConfig
from leaf.distill.divergences import DIVERGENCES, LOG_FLOOR, Divergence
from leaf.distill.losses import DenseTeacher, TopKTeacher, chunked_head_kl, distill_loss

CASES = [
    Divergence("forward-kl"),
    Divergence("reverse-kl"),
    Divergence("jsd", beta=0.5),
    Divergence("jsd", beta=0.1),
    Divergence("jsd", beta=0.0),
    Divergence("jsd", beta=1.0),
    Divergence("skew-forward-kl", alpha=0.1),
    Divergence("skew-forward-kl", alpha=0.7),
    Divergence("skew-reverse-kl", alpha=0.1),
    Divergence("skew-reverse-kl", alpha=0.0),
    Divergence("tvd"),
]
IDS = [d.describe().replace(" ", "") for d in CASES]
TEMPERATURES = (0.5, 1.0, 2.0)


def _kl(a, b):
    return (a * (torch.log(a) - torch.log(b))).sum(-1)


def reference(div: Divergence, p, q):
    """``D(p, q)`` per row from probabilities (``p`` teacher, ``q`` student), straight from the definitions."""
    if div.name == "forward-kl":
        return _kl(p, q)
    if div.name == "reverse-kl":
        return _kl(q, p)
    if div.name == "jsd":  # TRL GKD: beta 0 -> KL(p || q), beta 1 -> KL(q || p), else the mixture form
        b = div.beta
        if b == 0:
            return _kl(p, q)
        if b == 1:
            return _kl(q, p)
        m = b * p + (1 - b) * q
        return b * _kl(p, m) + (1 - b) * _kl(q, m)
    if div.name == "skew-forward-kl":
        return _kl(p, div.alpha * p + (1 - div.alpha) * q)
    if div.name == "skew-reverse-kl":
        return _kl(q, div.alpha * q + (1 - div.alpha) * p)
    assert div.name == "tvd"
    return 0.5 * (p - q).abs().sum(-1)


def dense_reference(div, z, t, T, w, labels=None, w_ce=None):
    """Weighted ``T^2 D(softmax(t/T), softmax(z/T))`` (+ cross-entropy at T = 1) of full logits, float64."""
    p = torch.softmax(t.double() / T, -1)
    q = torch.softmax(z.double() / T, -1)
    per = T**2 * reference(div, p, q)
    loss = (w.double() * per).sum()
    if labels is not None:
        loss = loss + (w_ce.double() * F.cross_entropy(z.double(), labels, reduction="none")).sum()
    return loss, per


def bucket_reference(div, z, top_lp, ids, T, w, labels=None, w_ce=None):
    """The same on the k + 1 outcomes of a top-k cache: the teacher's top k ids and one tail bucket."""
    q = torch.softmax(z.double() / T, -1)
    q_top = q.gather(-1, ids)
    q_tail = q.masked_fill(torch.zeros_like(q, dtype=torch.bool).scatter(-1, ids, True), 0).sum(-1, keepdim=True)
    p_top = top_lp.double().exp()
    p_tail = (1 - p_top.sum(-1, keepdim=True)).clamp(min=torch.finfo(torch.float32).tiny)
    per = T**2 * reference(div, torch.cat([p_top, p_tail], -1), torch.cat([q_top, q_tail], -1))
    loss = (w.double() * per).sum()
    if labels is not None:
        loss = loss + (w_ce.double() * F.cross_entropy(z.double(), labels, reduction="none")).sum()
    return loss, per


def _close(got, want, rtol=2e-5):
    got, want = got.double(), want.double()
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * float(want.abs().max()) + 1e-9)


def _case(seed=0, N=11, V=13):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, V, generator=g) * 2
    t = torch.randn(N, V, generator=g) * 2
    return z, t, torch.rand(N, generator=g) + 0.1, torch.randint(0, V, (N,), generator=g), torch.rand(N, generator=g)


# ----------------------------------------------------------------------------
# Dense teacher and top-k cache, on student logits.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("div", CASES, ids=IDS)
@pytest.mark.parametrize("T", TEMPERATURES)
@pytest.mark.parametrize("with_ce", [False, True])
@pytest.mark.parametrize("chunk", [4, None])
def test_dense_teacher_values_and_gradients(div, T, with_ce, chunk):
    z, t, w, labels, w_ce = _case()
    kw = {"labels": labels, "w_ce": w_ce} if with_ce else {}
    zs = z.clone().requires_grad_(True)
    parts = distill_loss(zs, torch.arange(len(z)), DenseTeacher(t, torch.arange(len(z))), w, temperature=T,
                         chunk_size=chunk, divergence=div, **kw)
    (0.6 * parts.loss).backward()
    zr = z.double().requires_grad_(True)
    ref, per = dense_reference(div, zr, t, T, w, **kw)
    (0.6 * ref).backward()
    _close(parts.loss, ref.detach())
    _close(parts.kl, per.detach())
    _close(zs.grad, zr.grad)


@pytest.mark.parametrize("div", CASES, ids=IDS)
@pytest.mark.parametrize("T", TEMPERATURES)
@pytest.mark.parametrize("with_ce", [False, True])
def test_topk_cache_is_the_tail_bucket_divergence(div, T, with_ce):
    """Value and gradient of the cache path equal autograd on the (top k + one tail bucket) distributions."""
    z, t, w, labels, w_ce = _case(seed=1)
    kw = {"labels": labels, "w_ce": w_ce} if with_ce else {}
    top = torch.log_softmax(t / T, -1).topk(4, dim=-1)
    zs = z.clone().requires_grad_(True)
    parts = distill_loss(zs, torch.arange(len(z)), TopKTeacher(top.values, top.indices), w, temperature=T,
                         chunk_size=3, divergence=div, **kw)
    parts.loss.backward()
    zr = z.double().requires_grad_(True)
    ref, per = bucket_reference(div, zr, top.values, top.indices, T, w, **kw)
    ref.backward()
    _close(parts.loss, ref.detach())
    _close(parts.kl, per.detach())
    _close(zs.grad, zr.grad)
    # the bucketed divergence never exceeds the full one (data processing inequality of f-divergences)
    _, full = dense_reference(div, z, t, T, w)
    assert bool((per <= full + 1e-6).all())
    assert float((full - per).detach().max()) > 1e-4  # and the tail does matter here


@pytest.mark.parametrize("div", CASES, ids=IDS)
def test_topk_cache_with_k_equal_vocabulary_is_exact(div):
    z, t, w, _, _ = _case(seed=2, V=9)
    top = torch.log_softmax(t / 2.0, -1).topk(9, dim=-1)
    zs = z.clone().requires_grad_(True)
    parts = distill_loss(zs, torch.arange(len(z)), TopKTeacher(top.values, top.indices), w, temperature=2.0,
                         divergence=div)
    parts.loss.backward()
    zr = z.double().requires_grad_(True)
    ref, _ = dense_reference(div, zr, t, 2.0, w)
    ref.backward()
    _close(parts.loss, ref.detach(), rtol=1e-4)
    _close(zs.grad, zr.grad, rtol=1e-4)


def test_empty_tail_bucket_and_zero_teacher_mass_stay_finite():
    """A cache whose top k hold all the mass: the tail is floored at float32's tiny; reverse KL stays finite and
    equals the floored bucket formula. A live teacher's -inf logit costs q (log q - LOG_FLOOR)."""
    V, T = 10, 1.0
    z = torch.randn(3, V)
    top_lp = torch.tensor([[0.0, -40.0, -40.0]] * 3)  # the top 3 hold all the mass (and more): an empty tail
    ids = torch.tensor([[0, 1, 2]] * 3)
    w = torch.ones(3)
    div = Divergence("reverse-kl")
    zs = z.clone().requires_grad_(True)
    parts = distill_loss(zs, torch.arange(3), TopKTeacher(top_lp, ids), w, temperature=T, divergence=div)
    parts.loss.backward()
    assert torch.isfinite(parts.kl).all() and torch.isfinite(zs.grad).all()
    q = torch.softmax(z.double(), -1)
    q_tail = q[:, 3:].sum(-1)
    p = top_lp.double().exp()
    want = (q[:, :3] * (q[:, :3].log() - p.log())).sum(-1) + q_tail * (q_tail.log() - LOG_FLOOR)
    _close(parts.kl, want, rtol=1e-4)
    assert float(want.min()) > 10  # a real penalty, not 0
    for other in CASES:
        out = distill_loss(z, torch.arange(3), TopKTeacher(top_lp, ids), w, divergence=other).kl
        assert torch.isfinite(out).all(), other
    # live teacher with a -inf logit (no mass on id 0)
    t = torch.randn(3, V)
    t[:, 0] = float("-inf")
    dense = distill_loss(z, torch.arange(3), DenseTeacher(t, torch.arange(3)), w, divergence=div).kl
    lp = torch.log_softmax(t.double(), -1)
    lq = torch.log_softmax(z.double(), -1)
    want = (q[:, 1:] * (lq[:, 1:] - lp[:, 1:])).sum(-1) + q[:, 0] * (lq[:, 0] - LOG_FLOOR)
    _close(dense, want, rtol=1e-4)


@pytest.mark.parametrize("div", CASES, ids=IDS)
def test_value_and_grad_leaves_its_inputs_and_matches_autograd(div):
    """The building block on its own (every kind, forward KL's generic form included): dD/du, u the scaled logits."""
    from leaf.distill.divergences import value_and_grad

    z, t, _, _, _ = _case(seed=5)
    lp, lq = torch.log_softmax(t, -1), torch.log_softmax(z, -1)
    lp0, lq0 = lp.clone(), lq.clone()
    value, grad = value_and_grad(lp, lq, div)
    assert torch.equal(lp, lp0) and torch.equal(lq, lq0)
    u = z.double().requires_grad_(True)
    want = reference(div, torch.softmax(t.double(), -1), torch.softmax(u, -1))
    want.sum().backward()
    _close(value, want.detach())
    _close(grad, u.grad)


def test_endpoints_are_the_plain_kls():
    z, t, w, _, _ = _case(seed=3)
    rows = torch.arange(len(z))

    def kl(div):
        return distill_loss(z, rows, DenseTeacher(t, rows), w, temperature=1.5, divergence=div).kl

    fwd, rev = kl(Divergence("forward-kl")), kl(Divergence("reverse-kl"))
    assert not torch.allclose(fwd, rev)
    _close(kl(Divergence("jsd", beta=0.0)), fwd)
    _close(kl(Divergence("jsd", beta=1.0)), rev)
    _close(kl(Divergence("skew-forward-kl", alpha=0.0)), fwd)
    _close(kl(Divergence("skew-reverse-kl", alpha=0.0)), rev)
    assert float(kl(Divergence("skew-forward-kl", alpha=1.0)).abs().max()) == 0.0
    # JSD is symmetric at beta 1/2 and bounded by log 2 (times T^2)
    sym = distill_loss(t, rows, DenseTeacher(z, rows), w, temperature=1.5, divergence=Divergence("jsd", beta=0.5)).kl
    _close(kl(Divergence("jsd", beta=0.5)), sym)
    assert float(sym.max()) <= 1.5**2 * math.log(2)
    tvd = kl(Divergence("tvd"))
    assert float(tvd.max()) <= 1.5**2 and float(tvd.min()) > 0


# ----------------------------------------------------------------------------
# The fused and checkpointed head paths, on hidden states and head weights.
# ----------------------------------------------------------------------------


class _Head:
    """An OutputHead-like head: ``torch.nn.Linear`` plus Cohere (multiply), Granite (divide), Gemma (softcap)."""

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


TRANSFORMS = {"plain": (None, None, None), "softcap": (None, None, 4.0), "scaled": (1.5, 2.5, None)}


@pytest.mark.parametrize("div", CASES, ids=IDS)
@pytest.mark.parametrize("T", TEMPERATURES)
@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("teacher_kind", ["fn", "dense", "topk"])
@pytest.mark.parametrize("with_ce", [False, True])
def test_head_paths_values_and_gradients(div, T, transform, teacher_kind, with_ce):
    """Fused (gradients chunk by chunk in the forward) and checkpointed paths: loss, per-token values and the
    gradients w.r.t. hidden states, head weight and bias equal autograd on the full logits (float64)."""
    torch.manual_seed(4)
    N, H, V = 19, 5, 15
    vocab = V - 2  # a padded student row: never compared, zero gradient
    lin = torch.nn.Linear(H, V)
    with torch.no_grad():
        lin.weight.mul_(2.0)
    head = _Head(lin, *TRANSFORMS[transform])
    hidden = torch.randn(N, H) * 2
    t_logits = torch.randn(N, V + 3) * 2
    w, labels, w_ce = torch.rand(N) + 0.1, torch.randint(0, vocab, (N,)), torch.rand(N)
    kw = {"labels": labels, "w_ce": w_ce} if with_ce else {}
    top = torch.log_softmax(t_logits[:, :vocab] / T, -1).topk(4, dim=-1)
    make_teacher = {
        "fn": lambda: (lambda sl: t_logits[sl]),
        "dense": lambda: DenseTeacher(t_logits, torch.arange(N)),
        "topk": lambda: TopKTeacher(top.values, top.indices, temperature=T),
    }[teacher_kind]
    # reference: float64 copy of the head, full logits
    lin64 = torch.nn.Linear(H, V).double()
    lin64.load_state_dict(lin.state_dict())
    h64 = hidden.double().requires_grad_(True)
    z = _Head(lin64, *TRANSFORMS[transform])(h64)[:, :vocab]
    if teacher_kind == "topk":
        ref, per = bucket_reference(div, z, top.values, top.indices, T, w, **kw)
    else:
        ref, per = dense_reference(div, z, t_logits[:, :vocab], T, w, **kw)
    (0.7 * ref).backward()
    want = [ref.detach(), per.detach(), h64.grad, lin64.weight.grad, lin64.bias.grad]
    for fused in (True, False):
        lin.zero_grad(set_to_none=True)
        h = hidden.clone().requires_grad_(True)
        parts = chunked_head_kl(h, head, make_teacher(), w, temperature=T, chunk_size=6, vocab_size=vocab,
                                fused=fused, divergence=div, **kw)
        (0.7 * parts.loss).backward()
        got = [parts.loss.detach(), parts.kl, h.grad, lin.weight.grad, lin.bias.grad]
        for name, g, wnt in zip(("loss", "per-token", "hidden", "weight", "bias"), got, want):
            try:
                _close(g, wnt, rtol=5e-5)
            except AssertionError as exc:
                raise AssertionError(f"fused={fused} {name}: {exc}") from None
        assert float(lin.weight.grad[vocab:].abs().max()) == 0


def _tiny_lm(kind):
    """A one-layer Gemma-2 (final_logit_softcapping 3 in its config) or Cohere (logit_scale 0.5) model."""
    import transformers

    common = dict(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1, eos_token_id=1, bos_token_id=2, pad_token_id=0)
    torch.manual_seed(6)
    if kind == "gemma2":
        config = transformers.Gemma2Config(head_dim=8, final_logit_softcapping=3.0, **common)
        model = transformers.Gemma2ForCausalLM(config)
        transform = lambda z: 3.0 * torch.tanh(z / 3.0)  # noqa: E731
    else:
        config = transformers.CohereConfig(logit_scale=0.5, **common)
        model = transformers.CohereForCausalLM(config)
        transform = lambda z: 0.5 * z  # noqa: E731
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # logits of a few units: the softcap bends them
    return model.eval(), transform


@pytest.mark.parametrize("kind", ["gemma2", "cohere"])
@pytest.mark.parametrize("div", [Divergence("reverse-kl"), Divergence("jsd", beta=0.5),
                                 Divergence("skew-reverse-kl", alpha=0.1), Divergence("tvd")], ids=lambda d: d.name)
@pytest.mark.parametrize("T", [0.5, 2.0])
@pytest.mark.parametrize("with_ce", [False, True])
def test_output_head_of_a_real_config_softcap_and_logit_scale(kind, div, T, with_ce):
    """leaf.heads.output_head reads the transform from the model's config; the fused path (and the checkpointed
    one) with it equal autograd through the transform written out by hand."""
    from leaf.distill.losses import _linear_head
    from leaf.heads import output_head

    model, transform = _tiny_lm(kind)
    head = output_head(model)
    assert _linear_head(head) is not None and (head.softcap, head.multiply) == ((3.0, None) if kind == "gemma2" else (None, 0.5))
    N, H, V = 9, 16, 40
    hidden = torch.randn(N, H)
    t_logits = torch.randn(N, V) * 3
    w, labels, w_ce = torch.rand(N) + 0.1, torch.randint(0, V, (N,)), torch.rand(N)
    kw = {"labels": labels, "w_ce": w_ce} if with_ce else {}
    weight = model.lm_head.weight
    W64 = weight.detach().double().requires_grad_(True)
    h64 = hidden.double().requires_grad_(True)
    z = transform(h64 @ W64.T)
    ref, per = dense_reference(div, z, t_logits, T, w, **kw)
    ref.backward()
    assert float((z.detach().abs()).max()) > 1.0  # the transform is not the identity here
    for fused in (True, False):
        model.zero_grad(set_to_none=True)
        h = hidden.clone().requires_grad_(True)
        parts = chunked_head_kl(h, head, lambda sl: t_logits[sl], w, temperature=T, chunk_size=4, fused=fused,
                                divergence=div, **kw)
        parts.loss.backward()
        _close(parts.loss, ref.detach(), rtol=5e-5)
        _close(parts.kl, per.detach(), rtol=5e-5)
        _close(h.grad, h64.grad, rtol=5e-5)
        _close(weight.grad, W64.grad, rtol=5e-5)


@pytest.mark.parametrize("div", [Divergence("reverse-kl"), Divergence("jsd", beta=0.3), Divergence("tvd")],
                         ids=lambda d: d.name)
def test_fused_path_under_bf16_autocast_close_to_fp32(div):
    """bf16 autocast (bf16 matrix products, fp32 divergence math and gradient buffers) stays close to fp32."""
    torch.manual_seed(7)
    N, H, V = 21, 16, 37
    lin = torch.nn.Linear(H, V, bias=False)
    hidden, t_logits, w = torch.randn(N, H), torch.randn(N, V) * 2, torch.rand(N) / N
    results = []
    for autocast in (True, False):
        lin.zero_grad(set_to_none=True)
        h = hidden.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            parts = chunked_head_kl(h, _Head(lin), lambda sl: t_logits[sl], w, temperature=1.5, chunk_size=4,
                                    divergence=div)
        parts.loss.backward()
        assert h.grad.dtype == torch.float32 and lin.weight.grad.dtype == torch.float32
        results.append((parts.loss.detach(), h.grad, lin.weight.grad))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=3e-2, atol=3e-2 * float(want.abs().max()))


# ----------------------------------------------------------------------------
# Temperature and options.
# ----------------------------------------------------------------------------


def test_cache_at_another_temperature_is_refused_with_one_line():
    z, t, w, _, _ = _case()
    top = torch.log_softmax(t / 2.0, -1).topk(4, dim=-1)
    teacher = TopKTeacher(top.values, top.indices, temperature=2.0)
    with pytest.raises(ValueError, match=r"^the cached teacher log-probs are at temperature 2, training asks for 1:") as exc:
        distill_loss(z, torch.arange(len(z)), teacher, w, temperature=1.0)
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="temperature 2"):
        chunked_head_kl(torch.randn(len(z), 3), torch.randn(13, 3), teacher, w, temperature=0.5)
    distill_loss(z, torch.arange(len(z)), teacher, w, temperature=2.0)  # the matching one is accepted


def test_dense_teacher_is_rescaled_exactly_at_any_temperature():
    """Live logits carry no temperature: each training temperature gets softmax(z_t / T) exactly."""
    z, t, w, _, _ = _case()
    rows = torch.arange(len(z))
    for T in TEMPERATURES:
        got = distill_loss(z, rows, DenseTeacher(t, rows), w, temperature=T, divergence=Divergence("tvd")).kl
        _, want = dense_reference(Divergence("tvd"), z, t, T, w)
        _close(got, want)


def test_divergence_options_are_validated():
    base = {"student": "s", "out": "o", "teacher": "t", "data": "d.jsonl"}
    cfg = make(DistillConfig, None, {**base, "divergence": "jsd", "divergence_beta": 0.25}, "test")
    assert (cfg.divergence, cfg.divergence_beta, cfg.divergence_alpha) == ("jsd", 0.25, 0.1)
    assert cfg.divergence_spec() == Divergence("jsd", beta=0.25, alpha=0.1)
    assert make(DistillConfig, None, base, "test").divergence_spec() == Divergence()
    for bad in ({"divergence": "kl"}, {"divergence_beta": 1.5}, {"divergence_alpha": -0.1}):
        with pytest.raises(ConfigError) as exc:
            make(DistillConfig, None, {**base, **bad}, "test")
        assert "\n" not in str(exc.value) and "divergence" in str(exc.value)
    with pytest.raises(ValueError, match="one of"):
        Divergence("kl")
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        Divergence("skew-forward-kl", alpha=2.0)
    assert set(DIVERGENCES) == {d.name for d in CASES}


# ----------------------------------------------------------------------------
# The option reaches the trainer (live teacher and cache alike).
# ----------------------------------------------------------------------------


def test_distill_runs_with_the_chosen_divergence(distill_setup, tmp_path):
    """One step of `distill` per setting: the logged loss is the chosen divergence's (TVD is at most 1; a
    full-vocabulary cache gives the live teacher's value), and leaf_config.json records it."""
    import json

    from leaf.distill import build_cache, distill
    from leaf.distill.config import CacheConfig
    from leaf.models import load_tokenizer

    def first(out, **kw):
        distill(student=str(distill_setup / "student"), data=distill_setup / "d.jsonl",
                counterfactuals=distill_setup / "cf.jsonl", out=out, per_device_batch_size=12, grad_accum=1,
                max_steps=1, save_steps=1000, lam=0.3, **kw)
        return json.loads((out / "metrics.jsonl").read_text().splitlines()[0])

    teacher = str(distill_setup / "teacher")
    fwd = first(tmp_path / "fwd", teacher=teacher)
    tvd = first(tmp_path / "tvd", teacher=teacher, divergence="tvd")
    assert 0 < tvd["kd_loss"] <= 1 and 0 < tvd["cd_loss"] <= 1
    assert abs(tvd["kd_loss"] - fwd["kd_loss"]) > 1e-3
    saved = json.loads((tmp_path / "tvd" / "leaf_config.json").read_text())
    assert saved["divergence"] == "tvd"
    vocab = len(load_tokenizer(str(distill_setup / "student")))
    cache = build_cache(CacheConfig(teacher=teacher, tokenizer=str(distill_setup / "student"),
                                    data=distill_setup / "d.jsonl", counterfactuals=distill_setup / "cf.jsonl",
                                    out=tmp_path / "cache", top_k=vocab)).out
    for name, kw in (("tvd", {}), ("jsd", {"divergence_beta": 0.3})):
        live = tvd if name == "tvd" else first(tmp_path / "live-jsd", teacher=teacher, divergence=name, **kw)
        cached = first(tmp_path / f"cached-{name}", teacher_cache=cache, divergence=name, **kw)
        for key in ("loss", "kd_loss", "cd_loss"):
            assert cached[key] == pytest.approx(live[key], rel=1e-5), (name, key)
