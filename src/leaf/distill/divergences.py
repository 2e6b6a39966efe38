"""The per-token divergences of distillation, with their analytic gradients (one chunk of rows at a time).

Notation: ``p`` the teacher's and ``q`` the student's distribution at the
training temperature ``T`` (``q = softmax(u)``, ``u = z_s / T``), ``lp`` /
``lq`` their log-probs. Every divergence is multiplied by ``T^2`` (as the KL,
Hinton et al.; at ``T = 1``, the default, nothing changes).

==================  ==================================================================
``forward-kl``      ``KL(p || q) = sum p (log p - log q)`` (mass-covering)
``reverse-kl``      ``KL(q || p) = sum q (log q - log p)`` (mode-seeking)
``jsd``             ``beta KL(p || m) + (1 - beta) KL(q || m)``, ``m = beta p + (1 - beta) q``;
                    TRL's GKD convention: ``beta = 0`` is forward KL, ``beta = 1`` reverse KL
                    (exactly those; between them the value goes to 0 at both ends)
``skew-forward-kl`` ``KL(p || alpha p + (1 - alpha) q)`` (DistiLLM's SKL; ``alpha = 0``: forward KL)
``skew-reverse-kl`` ``KL(q || alpha q + (1 - alpha) p)`` (DistiLLM's SRKL; ``alpha = 0``: reverse KL)
``tvd``             ``1/2 sum |p - q|`` (total variation distance)
==================  ==================================================================

Gradients. For any per-row ``D(p, q)`` with ``G = dD/dq``, the gradient with
respect to the student logits is ``T^2 * (1/T) * q (G - <q, G>)``; each
divergence below gives ``q * G`` (up to a constant in ``G``, which cancels),
written so that no ``1 / q`` is ever formed:

* reverse KL: ``q G = q (lq - lp)``;
* JSD: ``q G = (1 - beta) q (lq - lm)``;
* skew forward KL: ``q G = -(1 - alpha) p q / m``;
* skew reverse KL: ``q G = q (lq - lm - alpha q / m)``;
* TVD: ``q G = q sign(q - p) / 2`` (0 where ``p = q``, as autograd's ``abs``).

The teacher's tail bucket (top-k cache). Every divergence here is an
f-divergence, ``sum_v q_v f(p_v / q_v)``. The cache's teacher is spread over
the non-top-k ids in proportion to the student's own tail probabilities
(:class:`leaf.distill.losses.TopKTeacher`), so ``p_v / q_v = p_tail / q_tail``
on every tail id and the sum over the tail is ``q_tail f(p_tail / q_tail)``:
exactly the divergence of the ``k + 1``-outcome distributions (the top k ids
plus one tail bucket). Its gradient with respect to ``q`` on a tail id is
``f(r) - r f'(r)`` with ``r = p_tail / q_tail`` either way, so treating the
spread teacher as a constant gives the exact gradient of the bucketed
divergence (the tests check both against autograd on the bucketed form).

Zero teacher mass. Reverse KL is infinite wherever the teacher has no mass
and the student has some. A cache's empty tail bucket (the top k hold all the
mass, up to rounding) is floored at float32's smallest normal number
(:data:`leaf.distill.losses.TAIL_FLOOR`), and a live teacher's ``-inf``
log-prob (a ``-inf`` logit) is replaced by :data:`LOG_FLOOR` (its log, about
-87.3): such an id costs ``q_v (log q_v + 87.3)`` instead of ``inf``. The
other divergences are finite without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where the math runs: the options (leaf.distill.config) import this module
    from torch import Tensor

#: The divergences ``--divergence`` accepts.
DIVERGENCES = ("forward-kl", "reverse-kl", "jsd", "skew-forward-kl", "skew-reverse-kl", "tvd")
#: A zero teacher probability's log-prob in reverse KL: log of float32's smallest normal number, 2^-126 (about -87.34).
LOG_FLOOR = -126 * math.log(2)


@dataclass(frozen=True)
class Divergence:
    """Which divergence, with its parameter: ``beta`` (JSD) or ``alpha`` (skew KLs), each in ``[0, 1]``."""

    name: str = "forward-kl"
    beta: float = 0.5
    alpha: float = 0.1

    def __post_init__(self) -> None:
        if self.name not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {self.name!r}")
        for what, value in (("beta", self.beta), ("alpha", self.alpha)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"divergence {what} must be in [0, 1], got {value}")

    @property
    def kind(self) -> str:
        """The formula that computes it: the endpoints of JSD and the skew KLs are the plain KLs."""
        if self.name == "jsd" and self.beta in (0.0, 1.0):
            return "forward-kl" if self.beta == 0.0 else "reverse-kl"
        if self.name == "skew-forward-kl" and self.alpha == 0.0:
            return "forward-kl"
        if self.name == "skew-reverse-kl" and self.alpha == 0.0:
            return "reverse-kl"
        return self.name

    @property
    def is_forward_kl(self) -> bool:
        return self.kind == "forward-kl"

    def formula(self) -> str:
        """The divergence in words, teacher p and student q (the model card's loss line)."""
        return {
            "forward-kl": "forward KL(teacher || student)",
            "reverse-kl": "reverse KL(student || teacher)",
            "jsd": f"generalized Jensen-Shannon divergence (beta {self.beta:g}; TRL GKD's convention)",
            "skew-forward-kl": f"skew forward KL(teacher || {self.alpha:g} teacher + {1 - self.alpha:g} student)",
            "skew-reverse-kl": f"skew reverse KL(student || {self.alpha:g} student + {1 - self.alpha:g} teacher)",
            "tvd": "total variation distance(teacher, student)",
        }[self.name]

    def describe(self) -> str:
        """One line for logs: the name and its parameter."""
        if self.name == "jsd":
            return f"jsd (beta {self.beta:g})"
        if self.name.startswith("skew"):
            return f"{self.name} (alpha {self.alpha:g})"
        return self.name


FORWARD_KL = Divergence()


def _mix_log(la: Tensor, lb: Tensor, wa: float) -> Tensor:
    """``log(wa * exp(la) + (1 - wa) * exp(lb))`` for ``0 < wa < 1`` (one new buffer, one transient)."""
    import torch

    out = la + math.log(wa)
    return torch.logaddexp(out, lb + math.log1p(-wa), out=out)


def _xlogy_rows(p: Tensor, lp: Tensor, lm: Tensor) -> Tensor:
    """``sum p (lp - lm)`` per row, 0 where ``p = 0`` (whatever ``lp`` is; ``lm`` is finite)."""
    return (lp - lm).mul_(p).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0).sum(-1)


def value_and_grad(lp: Tensor, lq: Tensor, divergence: Divergence) -> tuple[Tensor, Tensor]:
    """Per-row divergence ``D(p, q)`` (no ``T^2``) and ``dD/du`` (``u = z_s / T``), both fp32.

    ``lp`` and ``lq`` are left unchanged; at most about four more ``(c, V)`` fp32
    buffers exist at once (two when it returns: the gradient and a freed one).

    Args:
        lp: ``(c, V)`` teacher log-probs (``-inf`` where the teacher has no mass).
        lq: ``(c, V)`` student log-probs.
    Returns:
        ``(value (c,), grad (c, V))``; multiply the gradient by ``T^2 / T = T`` for the logits.
    """
    import torch

    kind = divergence.kind
    q = lq.exp()
    if kind == "forward-kl":
        p = lp.exp()
        return _xlogy_rows(p, lp, lq), q.mul_(p.sum(-1, keepdim=True)).sub_(p)
    if divergence.name.startswith("skew") and float(divergence.alpha) == 1.0:  # m = p (or q): zero divergence
        return torch.zeros_like(lq[..., 0]), torch.zeros_like(lq)
    if kind == "reverse-kl":
        qg = torch.where(torch.isneginf(lp), LOG_FLOOR, lp).neg_().add_(lq).mul_(q)  # q (lq - lp), -inf floored
        value = qg.sum(-1)
    elif kind == "tvd":
        qg = lp.exp().neg_().add_(q)  # q - p
        value = torch.linalg.vector_norm(qg, ord=1, dim=-1).mul_(0.5)
        qg.sign_().mul_(q).mul_(0.5)
    elif kind == "jsd":
        b = float(divergence.beta)
        lm = _mix_log(lp, lq, b)
        teacher = _xlogy_rows(lp.exp(), lp, lm)
        qg = lm.neg_().add_(lq).mul_(q)  # q (lq - lm), in lm's storage
        value = teacher.mul_(b).add_(qg.sum(-1), alpha=1 - b)
        qg.mul_(1 - b)
    elif kind == "skew-forward-kl":
        a = float(divergence.alpha)
        lm = _mix_log(lp, lq, a)
        value = _xlogy_rows(lp.exp(), lp, lm)
        qg = lm.neg_().add_(lp).add_(lq).exp_().mul_(-(1 - a))  # -(1 - a) p q / m; 0 where p = 0
    elif kind == "skew-reverse-kl":
        a = float(divergence.alpha)
        diff = _mix_log(lq, lp, a).neg_().add_(lq)  # lq - lm
        value = (q * diff).sum(-1)
        qg = diff.exp().mul_(-a).add_(diff).mul_(q)  # q (lq - lm - a q / m)
        del diff
    else:  # pragma: no cover - Divergence validates the name
        raise ValueError(kind)
    return value, q.mul_(qg.sum(-1, keepdim=True).neg_()).add_(qg)  # q G - q <q, G>, in q's storage
