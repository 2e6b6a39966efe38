"""The distillation losses of LeaF Stage 2, as pure functions on tensors.

Notation: ``z_s`` / ``z_t`` are student / teacher logits of one token position,
``T`` the temperature, ``p = softmax(z_t / T)`` and ``q = softmax(z_s / T)``.

* Token-level forward KL, scaled by ``T^2`` (Hinton et al.) so that gradient
  magnitudes do not shrink with the temperature::

      kl(token) = T^2 * sum_v p_v * (log p_v - log q_v)

* Hybrid LeaF objective, each term averaged over *its own* loss tokens::

      L = lambda * mean_{tokens of originals} kl + (1 - lambda) * mean_{tokens of counterfactuals} kl
          + alpha * mean_{all loss tokens} ce

  ``ce`` is the cross-entropy (at temperature 1) of the reference token.

Only response tokens carry a loss (``loss_mask``); the caller builds it.

Other divergences (reverse KL, generalized JSD, skew KLs, total variation;
:mod:`leaf.distill.divergences`, ``divergence=``) replace the token KL in
every path below -- live teacher, top-k cache, fused head -- with their own
analytic gradients; ``kl`` in the results then holds that divergence
(``T^2``-scaled). The tail bucket below is exact for all of them.

Memory. A model's full-vocabulary fp32 log-probs for a batch are
``tokens x V x 4`` bytes (4096 tokens x 128k vocab = 2 GiB, per model). The
:func:`distill_loss` function never holds more than ``chunk_size`` rows of
them: a custom autograd function walks the loss tokens in chunks, upcasts one
chunk of student and teacher logits to fp32, accumulates the loss and writes
the analytic gradient ``d kl / d z_s = T * (q - p)`` (plus ``q1 - onehot`` for
the cross-entropy) into one buffer of the logits' own dtype. Backward just
scales that buffer. Chunked and unchunked results are equal up to float
rounding (the tests check values and gradients).

:func:`chunked_head_kl` goes one step further: it takes the student's final
hidden states ``(N, H)`` and its output head instead of logits, and the
teacher as a function giving one chunk's logits (or the top-k cache): no
``(N, V)`` logits of either model ever exist, only ``chunk x V`` at a time.
For a plain linear head (:class:`_FusedHeadDistill`, as Liger's fused linear
losses) each chunk is projected once, scored, and its gradients with respect
to the hidden states and the head weight are computed right away (the loss is
a scalar), the weight gradient accumulated in place in one preallocated
buffer; other heads are projected again in the backward pass
(``torch.utils.checkpoint``).

Teacher targets come either from live teacher logits (:class:`DenseTeacher`) or
from a cache of the teacher's top-k log-probs (:class:`TopKTeacher`). For the
cache, the teacher mass outside the top k (the *tail*) is kept as one bucket:

    kl_topk = T^2 * [ sum_{v in topk} p_v log(p_v / q_v) + p_tail log(p_tail / q_tail) ]

with ``p_tail = 1 - sum_{topk} p_v`` and ``q_tail = 1 - sum_{topk} q_v``. By the
log-sum inequality this never exceeds the exact KL, and the gap is

    0 <= kl - kl_topk = T^2 * p_tail * KL(p(.|tail) || q(.|tail))
                      <= T^2 * p_tail * log(1 / min_{v in tail} q(v | tail))

(:func:`topk_error_bound` computes the right-hand side). The gradient equals
the exact one with the tail of ``p`` replaced by ``p_tail`` spread in
proportion to the student's own tail probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from leaf.batching import loss_positions
from leaf.distill.divergences import FORWARD_KL, Divergence, value_and_grad

# ----------------------------------------------------------------------------
# Reference formulas (readable, unchunked, autograd): used by tests and docs.
# ----------------------------------------------------------------------------


def forward_kl(teacher_logits: Tensor, student_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-position ``T^2 * KL(softmax(z_t/T) || softmax(z_s/T))``.

    Args:
        teacher_logits, student_logits: ``(..., V)``, any float dtype.
    Returns:
        ``(...)`` fp32 KL in nats, differentiable w.r.t. the student logits.
    """
    t = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    return temperature**2 * (t.exp() * (t - s)).sum(-1)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over ``mask`` (0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def hybrid_loss(
    per_token_kl: Tensor,
    loss_mask: Tensor,
    is_counterfactual: Tensor,
    lam: float,
    per_token_ce: Tensor | None = None,
    alpha: float = 0.0,
) -> Tensor:
    """``lam * L_kd + (1 - lam) * L_cd (+ alpha * L_ce)`` for one batch (reference form).

    Args:
        per_token_kl: ``(B, L)`` token KL.
        loss_mask: ``(B, L)`` bool, True on the response tokens that carry a loss.
        is_counterfactual: ``(B,)`` bool, True for rows that are counterfactual samples.
        lam: weight of the original-sample term.
        per_token_ce: ``(B, L)`` token cross-entropy, needed when ``alpha > 0``.
    """
    cf = is_counterfactual.view(-1, 1).expand_as(loss_mask)
    kd = masked_mean(per_token_kl, loss_mask & ~cf)
    cd = masked_mean(per_token_kl, loss_mask & cf)
    loss = lam * kd + (1 - lam) * cd
    if alpha:
        assert per_token_ce is not None, "alpha > 0 needs per_token_ce"
        loss = loss + alpha * masked_mean(per_token_ce, loss_mask)
    return loss


# ----------------------------------------------------------------------------
# Token weights: how the hybrid objective becomes one weighted sum.
# ----------------------------------------------------------------------------

#: How the two KL terms are weighted (``--cd-weighting``): each a mean over its own tokens, or one pooled mean.
CD_WEIGHTINGS = ("term-mean", "token")



def hybrid_token_weights(
    is_counterfactual: Tensor,
    lam: float,
    n_kd: Tensor | float,
    n_cd: Tensor | float,
    alpha: float = 0.0,
    n_ce: Tensor | float | None = None,
    cd_weighting: str = "term-mean",
) -> tuple[Tensor, Tensor]:
    """Per-loss-token weights so that ``sum(w_kl * kl + w_ce * ce)`` is the hybrid loss.

    ``n_kd`` / ``n_cd`` are the numbers of loss tokens of originals /
    counterfactuals in the *whole* optimiser step (all micro-batches and all
    processes): weighting each micro-batch's tokens by them makes gradient
    accumulation and data parallelism give exactly the full-batch mean.

    ``cd_weighting`` (see :data:`CD_WEIGHTINGS`):

    * ``term-mean`` (the paper's formula): ``lam * S_kd / n_kd + (1 - lam) * S_cd / n_cd``,
      each term a mean over its own tokens; a term with no tokens contributes 0;
    * ``token`` (one pooled mean, as when originals and counterfactuals share one
      file): ``(lam * S_kd + (1 - lam) * S_cd) / (lam * n_kd + (1 - lam) * n_cd)``,
      where ``S`` are the summed token KLs. At ``lam = 0.5`` every loss token weighs
      the same; a step without counterfactual tokens is the plain mean KL of its
      originals (and the other way round).

    Args:
        is_counterfactual: ``(N,)`` bool, one entry per loss token.
    Returns:
        ``(w_kl, w_ce)``, both ``(N,)`` fp32.
    """
    cf = is_counterfactual.float()
    if cd_weighting == "token":
        kd_t = torch.as_tensor(n_kd, dtype=torch.float32, device=cf.device)
        cd_t = torch.as_tensor(n_cd, dtype=torch.float32, device=cf.device)
        pooled = lam * kd_t + (1 - lam) * cd_t
        pooled = torch.where(pooled > 0, pooled, torch.ones_like(pooled))  # no weighted token: all weights 0
        w_kl = ((1 - cf) * lam + cf * (1 - lam)) / pooled
    elif cd_weighting == "term-mean":
        n_kd_t = torch.as_tensor(n_kd, dtype=torch.float32, device=cf.device).clamp(min=1)
        n_cd_t = torch.as_tensor(n_cd, dtype=torch.float32, device=cf.device).clamp(min=1)
        w_kl = (1 - cf) * (lam / n_kd_t) + cf * ((1 - lam) / n_cd_t)
    else:
        raise ValueError(f"cd_weighting must be one of {', '.join(CD_WEIGHTINGS)}, got {cd_weighting!r}")
    if alpha:
        total = (n_kd + n_cd) if n_ce is None else n_ce
        w_ce = torch.full_like(cf, alpha) / torch.as_tensor(total, dtype=torch.float32, device=cf.device).clamp(min=1)
    else:
        w_ce = torch.zeros_like(cf)
    return w_kl, w_ce


# ----------------------------------------------------------------------------
# Teacher targets.
# ----------------------------------------------------------------------------


@dataclass
class DenseTeacher:
    """Live teacher logits.

    ``logits``: ``(R, V_t)`` rows (typically ``(B*L, V_t)``, a view of the
    model output; may live on another device); ``rows``: ``(N,)`` long index of
    the row of each loss token (same order as the student rows).
    """

    logits: Tensor
    rows: Tensor

    def log_probs(self, chunk: slice, vocab: int, temperature: float, device: torch.device, student_lp: Tensor) -> Tensor:
        z = self.logits[self.rows[chunk].to(self.logits.device), :vocab].to(device).float()  # a fresh copy
        return torch.log_softmax(z.div_(temperature) if temperature != 1.0 else z, dim=-1)


#: The least teacher mass of a top-k cache's tail bucket (float32's smallest normal number, about 1.2e-38).
TAIL_FLOOR = torch.finfo(torch.float32).tiny


@dataclass
class TopKTeacher:
    """Cached teacher: top-k log-probs (at the training temperature) and their ids.

    ``logprobs``: ``(N, K)`` (any float dtype), ``ids``: ``(N, K)`` long, one
    row per loss token. The tail mass ``1 - sum(exp(logprobs))`` is spread over
    the other ids in proportion to the student's probabilities (see the module
    docstring), which realises the tail-bucket KL -- and the tail-bucket form of
    every divergence of :mod:`leaf.distill.divergences`, values and gradients.
    The tail mass is floored at :data:`TAIL_FLOOR`.
    """

    logprobs: Tensor
    ids: Tensor
    #: the temperature the log-probs were made at (None: not recorded); training at another one is refused
    temperature: float | None = None

    def log_probs(self, chunk: slice, vocab: int, temperature: float, device: torch.device, student_lp: Tensor) -> Tensor:
        if self.temperature is not None and float(self.temperature) != float(temperature):
            raise ValueError(f"the cached teacher log-probs are at temperature {self.temperature:g}, training asks for "
                             f"{temperature:g}: a top-k cache cannot be rescaled (its tail mass at another temperature "
                             "is unknown); rebuild the cache at that temperature")
        lp = self.logprobs[chunk].to(device).float()
        ids = self.ids[chunk].to(device).long()
        # the tail masses 1 - sum(top k) in float64 ((c, k) only): no cancellation error when the tail is small
        wide = torch.float64 if lp.device.type != "mps" else torch.float32
        top_mass = lp.to(wide).exp().sum(-1, keepdim=True).clamp(max=1.0)
        tail_mass = (1 - top_mass).clamp(min=0)
        # student's log-prob mass outside the teacher's top-k
        s_top = student_lp.gather(-1, ids).to(wide)
        s_tail_lse = torch.log1p(-s_top.exp().sum(-1, keepdim=True).clamp(max=1 - 1e-7)).float()
        # an empty tail (the top k hold all the mass, up to rounding) is floored at float32's smallest normal
        # number: every divergence stays finite (reverse KL needs p > 0) and no value changes in float32
        out = student_lp + (torch.log(tail_mass.clamp(min=TAIL_FLOOR)).float() - s_tail_lse)
        return out.scatter(-1, ids, lp)


def topk_error_bound(student_logits: Tensor, ids: Tensor, logprobs: Tensor, temperature: float = 1.0) -> Tensor:
    """Upper bound of ``kl_exact - kl_topk`` per token (the gap is never negative).

    ``T^2 * p_tail * log(1 / min_{v in tail} q(v | tail))`` with ``q`` the
    student's distribution at temperature ``T``; shapes ``(N, V)``, ``(N, K)``, ``(N, K)``.
    """
    lq = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    tail = torch.ones_like(lq, dtype=torch.bool).scatter(-1, ids.long(), False)
    tail_lq = lq.masked_fill(~tail, float("inf"))
    tail_lse = torch.logsumexp(lq.masked_fill(~tail, float("-inf")), dim=-1)
    worst = tail_lse - tail_lq.min(-1).values  # log(1 / min q(v|tail))
    p_tail = (1 - logprobs.float().exp().sum(-1)).clamp(min=0)
    return temperature**2 * p_tail * worst


# ----------------------------------------------------------------------------
# The chunked loss.
# ----------------------------------------------------------------------------


@dataclass
class LossParts:
    """Result of :func:`distill_loss`: the scalar to backpropagate and per-token values (detached)."""

    loss: Tensor  # () weighted sum, differentiable w.r.t. the student logits
    kl: Tensor  # (N,) fp32 per-token KL (T^2 scaled), or the divergence asked for
    ce: Tensor  # (N,) fp32 per-token cross-entropy of the labels (0 when labels are None)


class _ChunkedDistill(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student_logits, rows, teacher, labels, w_kl, w_ce, temperature, chunk_size, vocab, divergence):  # type: ignore[override]
        flat = student_logits.reshape(-1, student_logits.shape[-1])
        device = flat.device
        # rows None: every row, in order (the chunked-head path: the logits are exactly the chunk's rows)
        n = rows.numel() if rows is not None else flat.shape[0]
        step = chunk_size if chunk_size and chunk_size > 0 else max(n, 1)
        whole = rows is None and step >= n and vocab == flat.shape[-1]  # the gradient is g itself: no extra buffer
        grad = torch.zeros_like(flat) if flat.requires_grad and not whole else None
        kl_out = torch.zeros(n, dtype=torch.float32, device=device)
        ce_out = torch.zeros(n, dtype=torch.float32, device=device)
        want_ce = labels is not None
        total = torch.zeros((), dtype=torch.float32, device=device)
        for start in range(0, n, step):
            sl = slice(start, min(start + step, n))
            r = rows[sl] if rows is not None else sl
            z = flat[r, :vocab].float()  # the only fp32 copy of student logits: one chunk (may alias flat: no in-place ops)
            y = labels[sl].long().unsqueeze(-1) if want_ce else None
            if want_ce and temperature != 1.0:
                lq1 = torch.log_softmax(z, dim=-1)  # cross-entropy is at T = 1
                ce = -lq1.gather(-1, y).squeeze(-1)
                g_ce = lq1.exp_()
                del lq1
            if temperature != 1.0:
                shared = z.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()
                z = z / temperature if shared else z.div_(temperature)
            lq = torch.log_softmax(z, dim=-1)
            del z
            if want_ce and temperature == 1.0:
                ce = -lq.gather(-1, y).squeeze(-1)
            lp = teacher.log_probs(sl, vocab, temperature, device, lq)
            wk = w_kl[sl].float()
            if divergence.is_forward_kl:
                p = lp.exp()
                # p * (log p - log q), in place; 0 * (-inf) (no teacher mass) -> 0
                kl = lp.sub_(lq).mul_(p).nan_to_num_(nan=0.0).sum(-1).mul_(temperature**2)
                del lp
                g = lq.exp_().sub_(p).mul_((temperature * wk).unsqueeze(-1))  # T * w * (q - p), reusing lq's storage
                del p
            else:  # T^2 D and T w dD/du (leaf.distill.divergences)
                kl, g = value_and_grad(lp, lq, divergence)
                del lp, lq
                kl = kl.mul_(temperature**2)
                g = g.mul_((temperature * wk).unsqueeze(-1))
            kl_out[sl] = kl
            total = total + (wk * kl).sum()
            if want_ce:
                wc = w_ce[sl].float()
                ce_out[sl] = ce
                total = total + (wc * ce).sum()
                if temperature == 1.0:
                    g.add_(torch.softmax(flat[r, :vocab].float(), dim=-1).mul_(wc.unsqueeze(-1)))
                else:
                    g.add_(g_ce.mul_(wc.unsqueeze(-1)))
                    del g_ce
                g.scatter_add_(-1, y, -wc.unsqueeze(-1))
            if grad is not None:
                grad[r, :vocab] = g.to(grad.dtype)
            elif whole and flat.requires_grad:
                grad = g.to(flat.dtype)
            del g
        ctx.save_for_backward(grad if grad is not None else torch.empty(0))
        ctx.shape = student_logits.shape
        ctx.mark_non_differentiable(kl_out, ce_out)
        return total, kl_out, ce_out

    @staticmethod
    def backward(ctx, grad_total, _gkl, _gce):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        # the saved buffer is used once: scale it in place instead of allocating another logits-sized tensor
        out = (grad if bool(grad_total == 1) else grad.mul_(grad_total.to(grad.dtype))).view(ctx.shape)
        return out, None, None, None, None, None, None, None, None, None


def distill_loss(
    student_logits: Tensor,
    rows: Tensor,
    teacher: DenseTeacher | TopKTeacher,
    w_kl: Tensor,
    *,
    labels: Tensor | None = None,
    w_ce: Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int | None = 1024,
    vocab_size: int | None = None,
    divergence: Divergence | None = None,
) -> LossParts:
    """``sum_i w_kl[i] * kl_i + w_ce[i] * ce_i`` over loss tokens, in chunks of ``chunk_size`` tokens.

    Args:
        student_logits: ``(B, L, V_s)`` or ``(R, V_s)`` model output (bf16/fp32); gradients flow to it.
        rows: ``(N,)`` long, the flattened row (``b * L + position``) of each loss
            token's *predicting* position (already shifted: logits at ``t``
            predict token ``t + 1``).
        teacher: :class:`DenseTeacher` (live) or :class:`TopKTeacher` (cache).
        w_kl: ``(N,)`` weights of the token KLs (see :func:`hybrid_token_weights`).
        labels: ``(N,)`` target ids for the optional cross-entropy; ``w_ce`` its weights.
        temperature: ``T``; the KL is scaled by ``T^2``.
        chunk_size: tokens per chunk; ``None`` or ``0`` = one chunk (unchunked).
        vocab_size: compare only ids ``< vocab_size`` (padded embedding rows of
            one model are dropped); default the student's ``V_s``.
        divergence: the token divergence (:class:`leaf.distill.divergences.Divergence`; default forward KL);
            ``kl`` of the result then holds it, ``T^2``-scaled.
    """
    vocab = vocab_size or student_logits.shape[-1]
    if labels is not None and w_ce is None:
        raise ValueError("labels given without w_ce")
    total, kl, ce = _ChunkedDistill.apply(
        student_logits, rows, teacher, labels, w_kl, w_ce, float(temperature), chunk_size, vocab,
        divergence or FORWARD_KL,
    )
    return LossParts(total, kl, ce)


# ----------------------------------------------------------------------------
# The chunked loss from hidden states: no full logits for student or teacher.
# ----------------------------------------------------------------------------

#: Default cap on the logits (positions x vocabulary) of one chunk of :func:`chunked_head_kl`
#: (2**24 = 64 MiB in fp32; about five such buffers exist per chunk).
HEAD_CHUNK_ELEMENTS = 2**24
#: ... and of the fused path (a plain linear student head, :class:`_FusedHeadDistill`; about three such fp32
#: buffers live per chunk, next to the weight gradient): 1/:data:`FUSED_CHUNK_FRACTION` of the batch's full
#: logits, at least this many (2**22 = 16 MiB in fp32; 32 positions at a 128k vocabulary) and at most
#: :data:`HEAD_CHUNK_ELEMENTS`. Larger batches get larger chunks (larger, more efficient matrix products).
FUSED_CHUNK_ELEMENTS = 2**22
FUSED_CHUNK_FRACTION = 64


class _LogitsTeacher:
    """Teacher logits of exactly one chunk's rows (computed for that chunk only)."""

    def __init__(self, logits: Tensor) -> None:
        self.logits = logits

    def log_probs(self, chunk: slice, vocab: int, temperature: float, device: torch.device, student_lp: Tensor) -> Tensor:
        z = self.logits[:, :vocab].to(device).float()
        return torch.log_softmax(z / temperature if temperature != 1.0 else z, dim=-1)


TeacherLogitsFn = Callable[[slice], Tensor]


def _chunk_teacher(teacher: DenseTeacher | TopKTeacher | TeacherLogitsFn, sl: slice) -> Any:
    if isinstance(teacher, TopKTeacher):
        return TopKTeacher(teacher.logprobs[sl], teacher.ids[sl], teacher.temperature)
    if isinstance(teacher, DenseTeacher):
        return DenseTeacher(teacher.logits, teacher.rows[sl])
    with torch.no_grad():
        return _LogitsTeacher(teacher(sl))


def _head_kl_chunk(head, hidden, sl, teacher, labels, w_kl, w_ce, temperature, vocab, divergence):  # type: ignore[no-untyped-def]
    logits = head(hidden)
    return _ChunkedDistill.apply(
        logits, None, _chunk_teacher(teacher, sl), None if labels is None else labels[sl], w_kl[sl],
        None if w_ce is None else w_ce[sl], temperature, None, vocab or logits.shape[-1], divergence,
    )


# ----------------------------------------------------------------------------
# The fused head + loss: gradients computed in the forward pass, chunk by chunk.
# ----------------------------------------------------------------------------


def _linear_head(head: Any) -> tuple[Tensor, Tensor | None, tuple[Any, Any, Any]] | None:
    """``(weight, bias, (multiply, divide, softcap))`` when ``head`` is a plain linear map plus a known transform.

    A weight tensor, or an :class:`leaf.heads.OutputHead` whose module is exactly ``torch.nn.Linear``
    (no subclass, no hooks, no replaced ``forward``, a real weight); anything else is None.
    """
    if isinstance(head, Tensor):
        return head, None, (None, None, None)
    module = getattr(head, "module", None)
    if type(module) is not torch.nn.Linear or "forward" in module.__dict__ or hasattr(module, "_hf_hook"):
        return None
    if module._forward_hooks or module._forward_pre_hooks or module.weight.is_meta:
        return None
    return module.weight, module.bias, (getattr(head, "multiply", None), getattr(head, "divide", None), getattr(head, "softcap", None))


class _FusedHeadDistill(torch.autograd.Function):
    """:func:`distill_loss` of ``transform(hidden @ weight.T + bias)`` without ever holding more than a chunk of logits.

    The loss is a scalar, so its gradients are computed in the forward pass, one chunk of positions at a time:
    logits -> loss -> ``g = d loss / d logits`` (the analytic ``T w (q - p)`` of :class:`_ChunkedDistill`) ->
    ``g @ W`` into a preallocated ``(N, H)`` buffer and ``g.T @ h`` accumulated in place into a preallocated
    weight-gradient buffer; the chunk's logits are then dropped. Backward only scales the saved gradients
    (in place). Each head is projected once per chunk (no recomputation), the teacher too.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, transform, teacher, labels, w_kl, w_ce, temperature, step, vocab, needs,  # type: ignore[override]
                divergence):
        n, device = hidden.shape[0], hidden.device
        vocab = min(vocab, weight.shape[0])
        W = weight[:vocab]  # ids >= vocab are never compared: their logits are not computed, their gradient is 0
        B = bias[:vocab] if bias is not None else None
        multiply, divide, softcap = transform
        need_h, need_w, need_b = needs
        gh = torch.zeros_like(hidden) if need_h else None
        gw = torch.zeros_like(weight) if need_w else None
        gb = torch.zeros_like(bias) if need_b else None
        kl_out = torch.zeros(n, dtype=torch.float32, device=device)
        ce_out = torch.zeros(n, dtype=torch.float32, device=device)
        total = torch.zeros((), dtype=torch.float32, device=device)
        want_ce = labels is not None
        T = temperature
        for start in range(0, n, step):
            sl = slice(start, min(start + step, n))
            h = hidden[sl]
            s = F.linear(h, W, B)  # (c, V) in the compute dtype (autocast applies)
            compute = s.dtype
            if multiply is not None:
                s = s * multiply
            if divide is not None:
                s = s / divide
            tanh = None
            if softcap is not None:
                tanh = torch.tanh(s / softcap)
                s = tanh * softcap
            x = s.float()  # the chunk's fp32 logits (a fresh tensor: in-place ops below are safe)
            del s
            y = labels[sl].long().unsqueeze(-1) if want_ce else None
            wk = w_kl[sl].float().unsqueeze(-1)
            x1 = None
            if want_ce:
                ce = (torch.logsumexp(x, dim=-1, keepdim=True) - x.gather(-1, y)).squeeze(-1)
                if T != 1.0:
                    x1 = x  # kept for softmax at T = 1 (the cross-entropy's gradient)
                    x = x / T
            elif T != 1.0:
                x = x.div_(T)
            lq = torch.log_softmax(x, dim=-1)
            del x
            if callable(teacher) and not isinstance(teacher, (DenseTeacher, TopKTeacher)):
                with torch.no_grad():
                    t = teacher(sl)[:, :vocab].to(device).float()  # may be a view of the caller's logits: no in-place
                    if T != 1.0:
                        t = t / T
                    lp = torch.log_softmax(t, dim=-1)
                    del t
            else:
                lp = teacher.log_probs(sl, vocab, T, device, lq)
            p = gd = None
            if divergence.is_forward_kl:
                p = lp.exp()
                kl = lp.sub_(lq).mul_(p).nan_to_num_(nan=0.0).sum(-1).mul_(T**2)  # p (log p - log q); 0 * -inf -> 0
            else:  # T^2 D; gd = dD/du (leaf.distill.divergences)
                kl, gd = value_and_grad(lp, lq, divergence)
                kl = kl.mul_(T**2)
            del lp
            kl_out[sl] = kl
            total = total + (wk.squeeze(-1) * kl).sum()
            if want_ce:
                wc = w_ce[sl].float().unsqueeze(-1)
                ce_out[sl] = ce
                total = total + (wc.squeeze(-1) * ce).sum()
            if not (need_h or need_w or need_b):
                del lq, p, gd
                continue
            if gd is not None:  # g = T w_kl dD/du (+ w_ce (softmax(z) - onehot))
                g = gd.mul_(T * wk)
                if want_ce:
                    g.add_((lq.exp_() if x1 is None else x1.softmax(-1)).mul_(wc))
                del gd, lq
            # g = T w_kl (q - p) (+ w_ce (softmax(z) - onehot)), in lq's storage
            elif want_ce and T == 1.0:
                g = lq.exp_().mul_(wk + wc).sub_(p.mul_(wk))
            else:
                g = lq.exp_().sub_(p).mul_(T * wk)
                if want_ce:
                    g.add_(x1.softmax(-1).mul_(wc))
            del p, x1
            if want_ce:
                g.scatter_add_(-1, y, -wc)
            if softcap is not None:
                g.mul_(tanh.float().square_().neg_().add_(1))
                del tanh
            if divide is not None:
                g.div_(divide)
            if multiply is not None:
                g.mul_(multiply)
            gz = g.to(compute)
            del g
            if need_h:
                gh[sl] = torch.mm(gz, W)
            if need_w:
                if gz.dtype == h.dtype == gw.dtype:
                    gw[:vocab].addmm_(gz.t(), h)  # in place: no (V, H) temporary
                else:  # mixed precision: a (rows, H) temporary of at most a chunk's size per block of vocabulary
                    hc = h.to(compute)
                    rows = max(1, gz.numel() // max(h.shape[-1], 1))
                    for v in range(0, vocab, rows):
                        gw[v : v + rows].add_(torch.mm(gz[:, v : v + rows].t(), hc))
            if need_b:
                gb[:vocab].add_(gz.sum(0).to(gb.dtype))
            del gz
        ctx.grads = (gh, gw, gb)
        ctx.mark_non_differentiable(kl_out, ce_out)
        return total, kl_out, ce_out

    @staticmethod
    def backward(ctx, grad_total, _gkl, _gce):  # type: ignore[override]
        grads, ctx.grads = ctx.grads, None  # used once: scaled in place, no second weight-sized buffer
        if grads is None:
            raise RuntimeError("the fused distillation loss supports one backward pass (no retain_graph)")
        if not bool(grad_total == 1):
            grads = tuple(g.mul_(grad_total.to(g.dtype)) if g is not None else None for g in grads)
        return (*grads, None, None, None, None, None, None, None, None, None, None)


def chunked_head_kl(
    student_hidden: Tensor,
    student_head: Tensor | Callable[[Tensor], Tensor],
    teacher: DenseTeacher | TopKTeacher | TeacherLogitsFn,
    w_kl: Tensor,
    *,
    labels: Tensor | None = None,
    w_ce: Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int | None = 1024,
    vocab_size: int | None = None,
    max_elements: int | None = None,
    fused: bool = True,
    divergence: Divergence | None = None,
) -> LossParts:
    """:func:`distill_loss` computed from the student's final hidden states, one chunk of positions at a time.

    Neither model's logits exist for more than one chunk of positions: each
    chunk projects its ``(c, H)`` student hidden states through the output
    head, gets the teacher's log-probs for the same ``c`` tokens, and runs the
    same per-token math as :func:`distill_loss`.

    A plain linear head (the usual case) takes the fused path: the gradients
    with respect to ``student_hidden`` and the head's weight (and bias) are
    computed chunk by chunk in the forward pass, into preallocated buffers,
    the weight gradient accumulated in place; each model's head is projected
    once per chunk and backward only scales those buffers. Any other head
    (hooks, wrappers, an arbitrary callable) runs each chunk under
    ``torch.utils.checkpoint`` instead: its logits (student and teacher) are
    dropped after the forward pass and recomputed in the backward pass.

    Args:
        student_hidden: ``(N, H)`` the student's final hidden states at the
            predicting position of each loss token (the input of its output head).
        student_head: ``(V_s, H)`` output weight (``F.linear``), or a callable
            ``(c, H) -> (c, V_s)`` logits (e.g. :class:`leaf.detect.saliency.OutputHead`,
            which adds final logit soft-capping; its ``vocab`` sizes the chunks).
        teacher: a :class:`TopKTeacher` (``N`` rows), a :class:`DenseTeacher`, or a
            callable ``slice -> (c, V_t)`` teacher logits of those loss tokens
            (e.g. the teacher's head on its hidden states; called under no_grad).
        w_kl, labels, w_ce, temperature, vocab_size: as in :func:`distill_loss`.
        chunk_size: at most this many tokens per chunk (``None`` / ``0``: no limit) ...
        max_elements: ... and at most this many logits per chunk (default on the fused path: 1/64 of the
            ``N x V`` logits, between :data:`FUSED_CHUNK_ELEMENTS` and :data:`HEAD_CHUNK_ELEMENTS`; on the
            checkpointed one :data:`HEAD_CHUNK_ELEMENTS`).
        divergence: the token divergence (default forward KL), as in :func:`distill_loss`.
        fused: use the fused path (:class:`_FusedHeadDistill`) when the head is a plain linear map (a weight,
            or an output head whose module is exactly ``torch.nn.Linear``, unhooked); ``False``: always the
            checkpointed path. Same results either way (the tests check 1e-5).
    """
    if labels is not None and w_ce is None:
        raise ValueError("labels given without w_ce")
    divergence = divergence or FORWARD_KL
    if isinstance(student_head, Tensor):
        weight = student_head
        head: Callable[[Tensor], Tensor] = lambda h: F.linear(h, weight)  # noqa: E731
        head_vocab = weight.shape[0]
    else:
        head = student_head
        head_vocab = int(getattr(student_head, "vocab", 0) or 0)
    n = student_hidden.shape[0]
    linear = _linear_head(student_head) if fused else None
    budget = HEAD_CHUNK_ELEMENTS if max_elements is None else max_elements
    if linear is not None and max_elements is None:
        full = n * int(vocab_size or head_vocab or linear[0].shape[0])
        budget = min(HEAD_CHUNK_ELEMENTS, max(FUSED_CHUNK_ELEMENTS, full // FUSED_CHUNK_FRACTION))
    step = chunk_size if chunk_size and chunk_size > 0 else max(n, 1)
    if vocab_size or head_vocab:
        step = max(1, min(step, budget // (vocab_size or head_vocab)))
    if linear is not None:
        weight, bias, transform = linear
        grad = torch.is_grad_enabled()
        needs = (grad and student_hidden.requires_grad, grad and weight.requires_grad,
                 grad and bias is not None and bias.requires_grad)
        total, kl, ce = _FusedHeadDistill.apply(
            student_hidden, weight, bias, transform, teacher, labels, w_kl, w_ce, float(temperature), step,
            int(vocab_size or weight.shape[0]), needs, divergence,
        )
        return LossParts(total, kl, ce)
    total = student_hidden.new_zeros((), dtype=torch.float32)
    kls, ces = [], []
    for start in range(0, n, step):
        sl = slice(start, min(start + step, n))
        args = (head, student_hidden[sl], sl, teacher, labels, w_kl, w_ce, float(temperature), vocab_size, divergence)
        if torch.is_grad_enabled():
            t, kl, ce = checkpoint(_head_kl_chunk, *args, use_reentrant=False)
        else:
            t, kl, ce = _head_kl_chunk(*args)
        total = total + t
        kls.append(kl)
        ces.append(ce)
    if not kls:
        empty = student_hidden.new_zeros(0, dtype=torch.float32)
        return LossParts(total, empty, empty)
    return LossParts(total, torch.cat(kls), torch.cat(ces))


def loss_rows(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Rows and targets of the loss tokens of a ``(B, L)`` HF-style label tensor (``-100`` = no loss).

    Returns ``(rows, targets)``: ``rows`` index the flattened ``(B*L)`` logits of
    the position that predicts each loss token (``b * L + t - 1``), ``targets``
    the token ids, both ``(N,)`` in row-major order.
    """
    batch, length = labels.shape
    mask = loss_positions(labels)
    b, t = mask.nonzero(as_tuple=True)
    rows = b * length + t
    return rows, labels[:, 1:][b, t]
