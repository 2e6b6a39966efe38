"""Real SmolLM2-135M-Instruct weights (scripts/fetch_models.sh): skipped, saying why, when not fetched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from leaf.distill.losses import forward_kl
from leaf.models import load_model, load_tokenizer

ROOT = Path(os.environ.get("LEAF_MODELS") or Path.home() / ".cache" / "leaf" / "models")
SMOL = ROOT / "smollm2-135m-instruct"
pytestmark = pytest.mark.skipif(not (SMOL / "config.json").exists(),
                                reason=f"{SMOL} absent: run scripts/fetch_models.sh")
TEXT = "Tom has 3 apples. Tom's cousin is 33 years old. He buys 4 more. How many apples does Tom have?"


@pytest.fixture(scope="module")
def smol() -> tuple[object, object]:
    return load_model(str(SMOL), dtype="float32", device="cpu"), load_tokenizer(str(SMOL))


def test_forward_kl_equals_torch_kl_div_on_real_logits(smol: tuple[object, object]) -> None:
    model, tok = smol
    ids = tok(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0]  # type: ignore[operator]
    teacher, student = logits[1:], logits[:-1]  # two different real distributions per row
    for temperature in (1.0, 2.0):
        ours = forward_kl(teacher, student, temperature)
        ref = torch.nn.functional.kl_div(torch.log_softmax(student / temperature, -1),
                                         torch.log_softmax(teacher / temperature, -1),
                                         log_target=True, reduction="none").sum(-1) * temperature**2
        assert ours.min() > 0
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_one_sgd_step_matches_first_order_prediction(smol: tuple[object, object]) -> None:
    model, tok = smol
    ids = tok(TEXT, return_tensors="pt").input_ids
    head = model.lm_head.weight  # type: ignore[attr-defined]
    saved = head.detach().clone()
    head.requires_grad_(True)
    try:
        loss = torch.nn.functional.cross_entropy(model(ids).logits[0, :-1], ids[0, 1:])  # type: ignore[operator]
        (grad,) = torch.autograd.grad(loss, head)
        lr = 1e-3
        with torch.no_grad():
            head -= lr * grad
            after = torch.nn.functional.cross_entropy(model(ids).logits[0, :-1], ids[0, 1:])  # type: ignore[operator]
        predicted = loss.item() - lr * grad.pow(2).sum().item()
        assert after < loss
        # a small step: the change is within 10% of the first-order prediction
        assert abs((loss.item() - after.item()) / (loss.item() - predicted) - 1) < 0.1
    finally:
        with torch.no_grad():
            head.copy_(saved)
        head.requires_grad_(False)
