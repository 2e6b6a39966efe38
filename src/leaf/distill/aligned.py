"""The cross-tokenizer token loss: teacher and student compared on aligned groups of tokens.

Inputs are the loss rows of both models (their logits at the positions that
predict each loss token) and, per row, the :class:`leaf.distill.align.Group`
it belongs to (groups numbered ``0 .. G-1``, each side's rows consecutive per
group and in group order).

Merging. For one side of a group with tokens ``x_1 .. x_a`` predicted at rows
``r_1 .. r_a``, the group's (log) vector over that side's vocabulary is

    lv(y) = log p_{r_1}(y) + sum_{j=2..a} log p_{r_j}(x_j)

the first position's distribution times the probability of the rest of the
group's actual tokens (as TRL's GOLD merges a split token; a single-token side
is just its distribution). Its total mass ``prod_j p(x_j)`` is at most 1.

``gold``: each side's first-row distribution over a partition of its outcomes (:func:`_bucket`): the shared
ids (:class:`leaf.distill.align.VocabMap`), the group's whole text (the actual first token followed by the
group's other actual tokens, ``p(x_1) prod p(x_j)``), and a tail bucket for the rest; two distributions over
``S + 2`` outcomes, compared with the training divergence (``--divergence``, forward KL by default),
``T^2``-scaled. With one tokenizer on both sides every group is 1:1, the map is the identity and the tail
is empty: the loss is the same-tokenizer divergence.

From a top-k cache (:class:`TopKRows`: the teacher's ``k`` most likely ids and their log-probs at each of its
rows, plus the log-prob of its actual token), ``gold`` lists per group the shared ids among the teacher's top
``k`` at the group's first row (and the teacher's actual first token, whose probability is stored), and both
sides' distributions are taken over those, the text and the tail (everything else). The teacher's tail is what
its listed outcomes and text leave; the student's is its own mass outside them. With ``k`` = the teacher's
vocabulary this is the live loss; with fewer, a shared id outside the top k moves from its own outcome to the
tail on both sides (the same tail bucket as the one-tokenizer cache, :class:`leaf.distill.losses.TopKTeacher`).

``uld`` (Boizard et al.'s Universal Logit Distillation): each side's merged
vector, sorted in decreasing order and padded with zeros to the larger
vocabulary; the loss is their L1 distance, ``T^2``-scaled. From a top-k cache the teacher's sorted vector is
known to its ``k`` largest entries (its first row's top ``k`` times the probability of the group's later
tokens); the rest of its mass is one bucket, compared with the student's sorted entries after the ``k``-th:
``sum_{i<k} |q_(i) - p_(i)| + |sum_{i>=k} q_(i) - p_tail|``, never above the whole-vocabulary distance and
equal to it when ``k`` is the teacher's vocabulary.

Memory: groups are processed a chunk at a time under ``torch.utils.checkpoint``
(fp32 log-probs of one chunk of rows exist at once, recomputed in backward);
the logits of the loss rows themselves are the caller's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from leaf.distill.divergences import FORWARD_KL, Divergence, value_and_grad
from leaf.distill.losses import TAIL_FLOOR

#: The aligned comparisons ``--cross-tokenizer`` can ask for.
ALIGNED_METHODS = ("gold", "uld")


class _BucketDivergence(torch.autograd.Function):
    """``D(p, q)`` per row of normalised log-probs ``lq`` (S + 1 outcomes); gradient from :func:`value_and_grad`.

    ``value_and_grad`` gives ``dD/du`` for ``q = softmax(u)``; at ``u = lq`` (normalised) ``softmax(u) = exp(lq)``
    for every parameter value, so that gradient is also the one with respect to ``lq`` along any path.
    """

    @staticmethod
    def forward(ctx, lq, lp, divergence):  # type: ignore[override]
        value, grad = value_and_grad(lp, lq.detach(), divergence)
        ctx.save_for_backward(grad)
        return value

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * g.unsqueeze(-1), None, None


def merged_log_vectors(lp: Tensor, group: Tensor, targets: Tensor, n_groups: int) -> tuple[Tensor, Tensor, Tensor]:
    """``((G, V) first rows' log-probs, (G,) log-prob of the later actual tokens, (G,) the actual first
    tokens)`` of one side.

    The merged log vector of a group is their sum. ``lp``: ``(R, V)`` log-probs of the rows; ``group``: ``(R,)``
    group index (0-based, consecutive, sorted); ``targets``: ``(R,)`` the actual token of each row.
    """
    first, rest = _first_and_rest(lp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1), group, n_groups)
    return lp[first], rest, targets[first].long()


def _first_and_rest(actual: Tensor, group: Tensor, n_groups: int) -> tuple[Tensor, Tensor]:
    """``((R,) whether each row is its group's first, (G,) sum of the later rows' ``actual`` log-probs)``."""
    first = torch.ones_like(group, dtype=torch.bool)
    first[1:] = group[1:] != group[:-1]
    rest = torch.zeros(n_groups, dtype=actual.dtype, device=actual.device).index_add(
        0, group, actual.masked_fill(first, 0.0))
    return first, rest


def _kept(la: Tensor, rest: Tensor) -> Tensor:
    """``log p(a) (1 - c)``: the first token ``a`` (log-prob ``la``), then not the rest of the group (``log c =
    rest``), floored at :data:`TAIL_FLOOR`."""
    return torch.log((la.exp() * -torch.expm1(rest)).clamp(min=TAIL_FLOOR))


def _bucket(first: Tensor, rest: Tensor, ids: Tensor, actual: Tensor, slot: Tensor) -> Tensor:
    """``(G, S + 2)`` log-probs of one side over a partition of its outcomes: the shared ids, the group's text,
    the tail.

    With ``a`` the group's actual first token and ``c = exp(rest)`` the probability of the rest of its tokens:
    the *text* outcome is ``p(a) c`` (this side writes the group's text); a shared id ``y != a`` is "the first
    token is ``y``", ``p(y)``; the shared slot of ``a`` keeps ``p(a) (1 - c)`` (``a``, then something else);
    the tail holds the first row's mass outside the shared ids (``a``'s share ``p(a) (1 - c)`` there when
    ``a`` is not shared). Both sides' vectors sum to 1 over the same outcomes, so the group's text is compared
    with the group's text whichever side splits it into more tokens. A one-token side (``c = 1``) has an empty
    slot at ``a`` (floored at :data:`TAIL_FLOOR`); with one tokenizer every group is 1:1 and the loss is the
    same-tokenizer divergence (the text slot holds ``p(a)``). ``slot``: ``(G,)`` the shared slot of ``a``
    (-1: ``a`` is not shared).
    """
    la = first.gather(-1, actual.unsqueeze(-1)).squeeze(-1)
    text = la + rest
    kept = _kept(la, rest)
    lshared = first.index_select(-1, ids)
    rows = (slot >= 0).nonzero().squeeze(-1)
    lshared = lshared.index_put((rows, slot[rows]), kept[rows])
    outside = torch.ones(first.shape[-1], dtype=torch.bool, device=first.device)
    outside[ids] = False
    out_mass = first.exp() * outside
    out_mass.scatter_(-1, actual.unsqueeze(-1), 0.0)  # a's mass is in the text and its own slot
    tail = out_mass.sum(-1) + outside[actual] * kept.exp()
    return torch.cat([lshared, text.unsqueeze(-1), torch.log(tail.clamp(min=TAIL_FLOOR)).unsqueeze(-1)], dim=-1)


def _uld(p_s: Tensor, top_t: Tensor, tail_t: Tensor | float = 0.0) -> Tensor:
    """L1 distance of the decreasingly sorted probability vectors, per row: the student's ``p_s`` (any order)
    against the teacher's ``k`` largest ``top_t`` (decreasing) and ``tail_t``, the mass of its entries after
    them, as one bucket (0 when ``top_t`` is its whole vector); the student's padded with zeros to ``k``."""
    a = p_s.sort(dim=-1, descending=True).values
    k = top_t.shape[-1]
    if a.shape[-1] < k:
        a = torch.cat([a, a.new_zeros(a.shape[0], k - a.shape[-1])], dim=-1)
    return (a[:, :k] - top_t).abs().sum(-1) + (a[:, k:].sum(-1) - tail_t).abs()


def _topk_uld_chunk(z_s, t, g_s, g_t, y_s, y_t, n, temperature):  # type: ignore[no-untyped-def]
    """``uld`` against cached teacher rows ``t`` (:class:`TopKRows`): the teacher's ``k`` largest merged
    probabilities and one bucket for the rest of its mass."""
    lq = torch.log_softmax(z_s.float() / temperature, dim=-1)
    first_s, rest_s, _ = merged_log_vectors(lq, g_s, y_s, n)
    with torch.no_grad():
        first, rest_t = _first_and_rest(t.actual.double(), g_t, n)
        top = t.logprobs[first].double()  # sorted descending: the merged vector's order too
        tail = (-torch.expm1(torch.logsumexp(top, -1))).clamp(min=0) * rest_t.exp()
        top = (top + rest_t.unsqueeze(-1)).exp()
    return _uld((first_s + rest_s.unsqueeze(-1)).exp(), top.float(), tail.float()) * temperature**2


def _chunk(z_s, z_t, g_s, g_t, y_s, y_t, n, ids_s, ids_t, method, temperature, divergence):  # type: ignore[no-untyped-def]
    lq = torch.log_softmax(z_s.float() / temperature, dim=-1)
    with torch.no_grad():
        lp = torch.log_softmax(z_t.float() / temperature, dim=-1)
        first_t, rest_t, a_t = merged_log_vectors(lp, g_t, y_t, n)
    first_s, rest_s, a_s = merged_log_vectors(lq, g_s, y_s, n)
    if method == "uld":
        top_t = (first_t + rest_t.unsqueeze(-1)).exp().sort(dim=-1, descending=True).values
        return _uld((first_s + rest_s.unsqueeze(-1)).exp(), top_t) * temperature**2
    slot_t, slot_s = _slots(ids_t, z_t.shape[-1])[a_t], _slots(ids_s, z_s.shape[-1])[a_s]
    lp_b = _bucket(first_t, rest_t, ids_t, a_t, slot_t)
    lq_b = _bucket(first_s, rest_s, ids_s, a_s, slot_s)
    # A side that writes the group in one shared token a: the other side's "first token is a" writes the same
    # text in one token too, so that slot joins the text outcome on both sides.
    for group, slot in ((g_s, slot_s), (g_t, slot_t)):
        rows = ((slot >= 0) & (torch.bincount(group, minlength=n) == 1)).nonzero().squeeze(-1)
        if rows.numel():
            lp_b, lq_b = _join_text(lp_b, rows, slot[rows]), _join_text(lq_b, rows, slot[rows])
    return _BucketDivergence.apply(lq_b, lp_b, divergence) * temperature**2


@dataclass
class TopKRows:
    """The teacher's rows as a top-k cache holds them (log-probs at the training temperature)."""

    logprobs: Tensor  #: (N_t, k) sorted descending
    ids: Tensor  #: (N_t, k) teacher token ids
    actual: Tensor  #: (N_t,) log-prob of the row's actual teacher token

    def __getitem__(self, rows: slice) -> TopKRows:
        return TopKRows(self.logprobs[rows], self.ids[rows], self.actual[rows])

    def to(self, device: torch.device) -> TopKRows:
        return TopKRows(self.logprobs.to(device), self.ids.long().to(device), self.actual.to(device))


def _topk_chunk(z_s, t, g_s, g_t, y_s, y_t, n, ids_s, ids_t, temperature, divergence):  # type: ignore[no-untyped-def]
    """``gold`` against cached teacher rows ``t`` (:class:`TopKRows`): the outcomes of each group are the shared
    ids among the teacher's top k at its first row (and its actual first token), the text and the tail."""
    lq = torch.log_softmax(z_s.float() / temperature, dim=-1)
    first_s, rest_s, a_s = merged_log_vectors(lq, g_s, y_s, n)
    floor = math.log(TAIL_FLOOR)
    vocab_t = int(max(ids_t.max(), t.ids.max(), y_t.max())) + 1
    slots_t = _slots(ids_t, vocab_t)
    with torch.no_grad():
        first, rest_t = _first_and_rest(t.actual.double(), g_t, n)
        la_t, kid, a_t = t.actual[first].double(), t.ids[first], y_t[first].long()
        in_top = kid == a_t.unsqueeze(-1)
        extra = torch.where(in_top.any(-1), -1, slots_t[a_t])  # a_t shared but not among the top k
        cols = torch.cat([slots_t[kid], extra.unsqueeze(-1)], dim=-1)  # (G, k + 1) shared slot per outcome
        valid = cols >= 0
        kept_t = _kept(la_t, rest_t)
        lt = torch.cat([t.logprobs[first].double(), la_t.unsqueeze(-1)], dim=-1)
        lt = torch.where(torch.cat([in_top, (extra >= 0).unsqueeze(-1)], dim=-1), kept_t.unsqueeze(-1), lt)
        lt = lt.masked_fill(~valid, floor)
        text_t = la_t + rest_t
        tail_t = 1 - (lt.exp() * valid).sum(-1) - text_t.exp()
        lp_b = torch.cat([lt, text_t.unsqueeze(-1), torch.log(tail_t.clamp(min=TAIL_FLOOR)).unsqueeze(-1)], -1).float()
    sid = ids_s[cols.clamp(min=0)]  # the student's id of each outcome
    is_a = (sid == a_s.unsqueeze(-1)) & valid
    la_s = first_s.gather(-1, a_s.unsqueeze(-1)).squeeze(-1)
    kept_s = _kept(la_s, rest_s)
    ls = torch.where(is_a, kept_s.unsqueeze(-1), first_s.gather(-1, sid)).masked_fill(~valid, floor)
    listed = torch.zeros_like(first_s, dtype=torch.bool).scatter_(-1, torch.where(valid, sid, a_s.unsqueeze(-1)), True)
    out_mass = first_s.exp().masked_fill(listed, 0.0).scatter(-1, a_s.unsqueeze(-1), 0.0)
    tail_s = out_mass.sum(-1) + (~is_a.any(-1)) * kept_s.exp()  # a's mass is in the text and its own outcome
    lq_b = torch.cat([ls, (la_s + rest_s).unsqueeze(-1), torch.log(tail_s.clamp(min=TAIL_FLOOR)).unsqueeze(-1)], -1)
    # a side writing the group in one shared token: that token's outcome joins the text on both sides
    slots_s = _slots(ids_s, z_s.shape[-1])
    for group, slot in ((g_s, slots_s[a_s]), (g_t, slots_t[a_t])):
        hit = (cols == slot.unsqueeze(-1)) & valid & (slot >= 0).unsqueeze(-1)
        rows = (hit.any(-1) & (torch.bincount(group, minlength=n) == 1)).nonzero().squeeze(-1)
        if rows.numel():
            col = hit[rows].float().argmax(-1)
            lp_b, lq_b = _join_text(lp_b, rows, col), _join_text(lq_b, rows, col)
    return _BucketDivergence.apply(lq_b, lp_b, divergence) * temperature**2


def _slots(ids: Tensor, vocab: int) -> Tensor:
    """``(vocab,)`` the shared slot of each id of one side (its position in ``ids``), -1 for ids not shared."""
    slots = torch.full((vocab,), -1, dtype=torch.long, device=ids.device)
    slots[ids] = torch.arange(ids.numel(), device=ids.device)
    return slots


def _join_text(lb: Tensor, rows: Tensor, slots: Tensor) -> Tensor:
    """``lb`` ``(G, S + 2)`` with the shared slot ``slots[i]`` of each row ``rows[i]`` moved into the text
    outcome (column S)."""
    text_col = lb.shape[-1] - 2
    text = torch.logaddexp(lb[rows, text_col], lb[rows, slots])
    lb = lb.index_put((rows, torch.full_like(rows, text_col)), text)
    return lb.index_put((rows, slots), torch.full_like(text, math.log(TAIL_FLOOR)))


@dataclass
class AlignedParts:
    loss: Tensor  #: () ``sum_g w_g D_g``
    per_group: Tensor  #: (G,) detached ``D_g``


def aligned_loss(student_logits: Tensor, teacher_logits: Tensor | TopKRows, student_group: Tensor, teacher_group: Tensor,
                 student_targets: Tensor, teacher_targets: Tensor, weights: Tensor, shared_student: Tensor,
                 shared_teacher: Tensor, *, method: str = "gold", temperature: float = 1.0,
                 divergence: Divergence | None = None, chunk_rows: int | None = 1024) -> AlignedParts:
    """``sum_g weights[g] * D_g`` over aligned groups, a chunk of groups at a time.

    Args:
        student_logits: ``(N_s, V_s)`` logits of the student's loss rows (gradients flow to them).
        teacher_logits: ``(N_t, V_t)`` the teacher's (no gradient), or its cached rows (:class:`TopKRows`).
        student_group, teacher_group: ``(N_s,)`` / ``(N_t,)`` group index of each row (sorted, 0 .. G-1, each
            group present on both sides).
        student_targets, teacher_targets: the actual token of each row (used to merge multi-token sides).
        weights: ``(G,)`` weight of each group's divergence.
        shared_student, shared_teacher: ``(S,)`` the shared ids (``VocabMap``), for ``gold``.
        chunk_rows: about this many rows of either side per chunk (``None``: all at once).
    """
    if method not in ALIGNED_METHODS:
        raise ValueError(f"method must be one of {', '.join(ALIGNED_METHODS)}, got {method!r}")
    cached = isinstance(teacher_logits, TopKRows)
    divergence = divergence or FORWARD_KL
    n = int(weights.shape[0])
    dev = student_logits.device
    if n == 0:
        return AlignedParts(student_logits.sum() * 0.0, torch.zeros(0, device=dev))
    s_start = torch.searchsorted(student_group, torch.arange(n + 1, device=student_group.device)).tolist()
    t_start = torch.searchsorted(teacher_group, torch.arange(n + 1, device=teacher_group.device)).tolist()
    step = chunk_rows if chunk_rows and chunk_rows > 0 else max(len(student_group), len(teacher_group), 1)
    total = student_logits.new_zeros((), dtype=torch.float32)
    values = []
    g0 = 0
    while g0 < n:
        g1 = g0 + 1
        while g1 < n and max(s_start[g1 + 1] - s_start[g0], t_start[g1 + 1] - t_start[g0]) <= step:
            g1 += 1
        ss, ts = slice(s_start[g0], s_start[g1]), slice(t_start[g0], t_start[g1])
        t_logits = teacher_logits[ts].to(dev)
        base = (student_logits[ss], t_logits, student_group[ss] - g0, teacher_group[ts].to(dev) - g0,
                student_targets[ss], teacher_targets[ts].to(dev), g1 - g0)
        fn: Any
        if cached and method == "uld":
            fn, args = _topk_uld_chunk, (*base, float(temperature))
        elif cached:
            fn, args = _topk_chunk, (*base, shared_student, shared_teacher, float(temperature), divergence)
        else:
            fn, args = _chunk, (*base, shared_student, shared_teacher, method, float(temperature), divergence)
        if torch.is_grad_enabled() and student_logits.requires_grad:
            d = checkpoint(fn, *args, use_reentrant=False)
        else:
            d = fn(*args)
        total = total + (weights[g0:g1].float() * d).sum()
        values.append(d.detach())
        g0 = g1
    return AlignedParts(total, torch.cat(values))
