"""--cd-weighting: term-mean (each term a mean over its own tokens) vs token (one pooled mean), against
per-token loops written out independently of the token-weight code."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from leaf.config import ConfigError, make
from leaf.distill import DistillConfig, distill
from leaf.distill.data import load_examples
from leaf.distill.losses import DenseTeacher, distill_loss, forward_kl, hybrid_token_weights, loss_rows
from leaf.distill.metrics import eval_metrics
from leaf.models import load_model, load_tokenizer


def _batch(seed: int, cf_rows: list[bool]):
    g = torch.Generator().manual_seed(seed)
    B, L, V = len(cf_rows), 6, 9
    student = torch.randn(B, L, V, generator=g)
    teacher = torch.randn(B, L, V, generator=g)
    labels = torch.randint(0, V, (B, L), generator=g)
    labels[:, :2] = -100
    labels[0, 5] = -100
    return student, teacher, labels, torch.tensor(cf_rows)


def _per_token(student, teacher, labels, is_cf_row):
    """[(kl, counterfactual?)] for every loss token, one position at a time."""
    out = []
    for b in range(labels.shape[0]):
        for p in range(labels.shape[1] - 1):
            if labels[b, p + 1] != -100:
                out.append((forward_kl(teacher[b, p], student[b, p]).item(), bool(is_cf_row[b])))
    return out


def _loss(student, teacher, labels, is_cf_row, lam, weighting, n_kd=None, n_cd=None):
    rows, _ = loss_rows(labels)
    cf = is_cf_row[rows // labels.shape[1]]
    n_kd = int((~cf).sum()) if n_kd is None else n_kd
    n_cd = int(cf.sum()) if n_cd is None else n_cd
    w, _ = hybrid_token_weights(cf, lam, n_kd, n_cd, cd_weighting=weighting)
    V = student.shape[-1]
    return distill_loss(student, rows, DenseTeacher(teacher.reshape(-1, V), rows), w)


@pytest.mark.parametrize("lam", [0.5, 0.3, 0.9])
def test_term_mean_is_the_old_loss_and_token_is_the_pooled_mean(lam):
    student, teacher, labels, is_cf_row = _batch(1, [False, True, False, False])
    tokens = _per_token(student, teacher, labels, is_cf_row)
    kd = [k for k, c in tokens if not c]
    cd = [k for k, c in tokens if c]
    assert len(kd) == 11 and len(cd) == 4  # one counterfactual row of four

    term = _loss(student, teacher, labels, is_cf_row, lam, "term-mean").loss.item()
    assert term == pytest.approx(lam * sum(kd) / len(kd) + (1 - lam) * sum(cd) / len(cd), rel=1e-5)
    # the default is the weights as they were: lam / n_kd on originals, (1 - lam) / n_cd on counterfactuals
    rows, _ = loss_rows(labels)
    cf = is_cf_row[rows // 6]
    c, n_kd, n_cd = cf.float(), torch.tensor(11.0), torch.tensor(4.0)  # the weights' formula before the option
    old = (1 - c) * (lam / n_kd) + c * ((1 - lam) / n_cd)
    assert torch.equal(hybrid_token_weights(cf, lam, 11, 4)[0], old)
    assert torch.equal(hybrid_token_weights(cf, lam, 11, 4, cd_weighting="term-mean")[0], old)

    token = _loss(student, teacher, labels, is_cf_row, lam, "token").loss.item()
    pooled = (lam * sum(kd) + (1 - lam) * sum(cd)) / (lam * len(kd) + (1 - lam) * len(cd))
    assert token == pytest.approx(pooled, rel=1e-5)
    if lam == 0.5:  # every token alike: the plain mean over all loss tokens
        assert token == pytest.approx(sum(kd + cd) / len(tokens), rel=1e-5)
        assert token != pytest.approx(term, rel=1e-3)  # the counterfactual row weighs less than half here


@pytest.mark.parametrize("weighting", ["term-mean", "token"])
def test_microbatches_with_step_counts_sum_to_the_full_batch_loss_and_gradient(weighting):
    student, teacher, labels, is_cf_row = _batch(2, [False, True, False, True, False])
    rows, _ = loss_rows(labels)
    cf = is_cf_row[rows // 6]
    n_kd, n_cd = int((~cf).sum()), int(cf.sum())

    def loss_and_grad(idx):
        x = student[idx].clone().requires_grad_(True)
        loss = _loss(x, teacher[idx], labels[idx], is_cf_row[idx], 0.4, weighting, n_kd, n_cd).loss
        loss.backward()
        return loss.detach(), x.grad

    whole, g_whole = loss_and_grad(torch.arange(5))
    parts = [loss_and_grad(torch.tensor([i])) for i in range(5)]
    torch.testing.assert_close(sum(p[0] for p in parts), whole)
    torch.testing.assert_close(torch.cat([p[1] for p in parts]), g_whole)


def test_a_step_without_counterfactual_tokens():
    student, teacher, labels, is_cf_row = _batch(3, [False, False, False])
    kd = [k for k, _ in _per_token(student, teacher, labels, is_cf_row)]
    mean = sum(kd) / len(kd)
    # token: the plain mean of the originals; term-mean: the counterfactual term is 0, the KD term keeps lam
    assert _loss(student, teacher, labels, is_cf_row, 0.3, "token").loss.item() == pytest.approx(mean, rel=1e-5)
    assert _loss(student, teacher, labels, is_cf_row, 0.3, "term-mean").loss.item() == pytest.approx(0.3 * mean, rel=1e-5)
    # no loss tokens at all, or lambda 0 with no counterfactual tokens: zero weights, no division by zero
    none = torch.zeros(0, dtype=torch.bool)
    assert hybrid_token_weights(none, 0.5, 0, 0, cd_weighting="token")[0].numel() == 0
    w, _ = hybrid_token_weights(torch.zeros(4, dtype=torch.bool), 0.0, 4, 0, cd_weighting="token")
    assert torch.equal(w, torch.zeros(4))


def test_unknown_weighting_is_refused():
    with pytest.raises(ValueError, match="cd_weighting"):
        hybrid_token_weights(torch.zeros(2, dtype=torch.bool), 0.5, 2, 0, cd_weighting="mean")
    with pytest.raises(ConfigError, match="cd_weighting|cd-weighting"):
        make(DistillConfig, None, dict(student="s", teacher="t", data="d.jsonl", out="o", cd_weighting="mean"), "distill()")


def test_eval_metrics_follow_the_weighting():
    rows = [(3.0, 3, False, 0.0), (5.0, 2, False, 0.0), (1.0, 4, True, 0.0)]  # (KL sum, tokens, cf?, CE sum)
    term = eval_metrics(rows, 0.5, 0.0)
    assert term["eval_loss"] == pytest.approx(0.5 * 8 / 5 + 0.5 * 1 / 4)
    token = eval_metrics(rows, 0.5, 0.0, cd_weighting="token")
    assert token["eval_loss"] == pytest.approx(9 / 9)
    assert token["eval_kd_loss"] == term["eval_kd_loss"] == pytest.approx(8 / 5)
    assert eval_metrics(rows, 0.2, 0.0, cd_weighting="token")["eval_loss"] == pytest.approx((0.2 * 8 + 0.8 * 1) / (0.2 * 5 + 0.8 * 4))


def _run(setup, out, **kw):
    return distill(student=str(setup / "student"), teacher=str(setup / "teacher"), data=setup / "d.jsonl",
                   counterfactuals=setup / "cf.jsonl", out=out, save_steps=1000, **kw).out


def test_trainer_first_step_loss_is_the_pooled_mean(distill_setup, tmp_path):
    """A whole-dataset step with --cd-weighting token logs the pooled mean over every example's tokens."""
    lam = 0.3
    out = _run(distill_setup, tmp_path / "run", lam=lam, batch_size=12, grad_accum=1, max_steps=1,
               cd_weighting="token")
    tok = load_tokenizer(str(distill_setup / "student"))
    teacher, student = load_model(str(distill_setup / "teacher")), load_model(str(distill_setup / "student"))
    sums = {False: [0.0, 0], True: [0.0, 0]}
    for ex in load_examples(tok, distill_setup / "d.jsonl", distill_setup / "cf.jsonl"):
        ids = torch.tensor([ex.input_ids])
        with torch.no_grad():
            kl = forward_kl(teacher(ids).logits[0, :-1], student(ids).logits[0, :-1])
        mask = torch.tensor(ex.labels[1:]) != -100
        sums[ex.counterfactual][0] += kl[mask].sum().item()
        sums[ex.counterfactual][1] += int(mask.sum())
    (s_kd, n_kd), (s_cd, n_cd) = sums[False], sums[True]
    (row,) = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert row["loss"] == pytest.approx((lam * s_kd + (1 - lam) * s_cd) / (lam * n_kd + (1 - lam) * n_cd), rel=1e-4)
    assert row["kd_loss"] == pytest.approx(s_kd / n_kd, rel=1e-4)  # the parts stay means over their own tokens
    assert row["cd_loss"] == pytest.approx(s_cd / n_cd, rel=1e-4)
    assert json.loads((out / "leaf_config.json").read_text())["cd_weighting"] == "token"


def test_trainer_gradient_accumulation_with_token_weighting(distill_setup, tmp_path):
    common = dict(max_steps=1, optim="sgd", learning_rate=0.5, lr_scheduler="constant", warmup_steps=0,
                  max_grad_norm=0.0, cd_weighting="token", lam=0.3)
    a = load_file(str(_run(distill_setup, tmp_path / "a", batch_size=4, grad_accum=1, **common) / "model.safetensors"))
    b = load_file(str(_run(distill_setup, tmp_path / "b", batch_size=1, grad_accum=4, **common) / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
