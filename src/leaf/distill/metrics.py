"""The evaluation metrics of a distillation: the LeaF loss over held-out examples."""

from __future__ import annotations

from typing import Any


def eval_metrics(rows: Any, lam: float, alpha: float, prefix: str = "eval",
                 cd_weighting: str = "term-mean") -> dict[str, float]:
    """The LeaF loss of held-out examples from their ``(KL sum, loss tokens, counterfactual?, CE sum)``.

    As in training: with ``term-mean`` each term is a mean over its own loss tokens, ``lambda x L_kd +
    (1 - lambda) x L_cd``; with ``token`` one pooled mean ``(lambda x S_kd + (1 - lambda) x S_cd) /
    (lambda x n_kd + (1 - lambda) x n_cd)`` (:func:`~leaf.distill.losses.hybrid_token_weights`); plus
    ``alpha x CE over all loss tokens``. With one kind of example only, its term is the loss.
    """
    kd = cd = ce = 0.0
    n_kd = n_cd = examples = 0
    for kl_sum, n, is_cf, ce_sum in rows:
        examples += 1
        if is_cf:
            cd, n_cd = cd + kl_sum, n_cd + n
        else:
            kd, n_kd = kd + kl_sum, n_kd + n
        ce += ce_sum
    out: dict[str, float] = {f"{prefix}_examples": examples, f"{prefix}_loss_tokens": n_kd + n_cd}
    if n_kd:
        out[f"{prefix}_kd_loss"] = kd / n_kd
    if n_cd:
        out[f"{prefix}_cd_loss"] = cd / n_cd
    if n_kd and n_cd:
        if cd_weighting == "token":
            loss = (lam * kd + (1 - lam) * cd) / (lam * n_kd + (1 - lam) * n_cd)
        else:
            loss = lam * kd / n_kd + (1 - lam) * cd / n_cd
    else:
        loss = kd / n_kd if n_kd else (cd / n_cd if n_cd else float("nan"))
    if alpha:
        out[f"{prefix}_ce_loss"] = ce / max(n_kd + n_cd, 1)
        loss += alpha * out[f"{prefix}_ce_loss"]
    out[f"{prefix}_loss"] = loss
    return out
