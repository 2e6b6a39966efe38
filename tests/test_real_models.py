"""Real SmolLM2-135M-Instruct weights (scripts/fetch_models.sh): skipped, saying why, when not fetched.

The teacher is the real model; the student is made from it by keeping every other decoder layer
(how pruned students are made in practice), so the two really differ.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from leaf.distill.losses import forward_kl
from leaf.gguf import fetched_models
from leaf.models import load_model, load_tokenizer

ROOT = fetched_models()
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


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, smol: tuple[object, object]) -> Path:
    """A folder with ``student/`` (every other layer of the real model) and a 4-problem distractor benchmark."""
    from leaf.data.distractors import distractors

    model, tok = smol
    root = tmp_path_factory.mktemp("real_pair")
    student = copy.deepcopy(model)  # the loaded model itself stays whole for the other tests
    layers = student.model.layers  # type: ignore[attr-defined]
    student.model.layers = torch.nn.ModuleList(layers[i] for i in range(0, len(layers), 2))  # type: ignore[attr-defined]
    for i, layer in enumerate(student.model.layers):  # type: ignore[attr-defined]
        layer.self_attn.layer_idx = i
    student.config.num_hidden_layers = len(student.model.layers)  # type: ignore[attr-defined]
    student.config.layer_types = student.config.layer_types[::2] if getattr(student.config, "layer_types", None) else None  # type: ignore[attr-defined]
    student.save_pretrained(root / "student")  # type: ignore[attr-defined]
    tok.save_pretrained(root / "student")  # type: ignore[attr-defined]
    distractors(out=root / "bench", n=4, seed=0, families=["add", "two-step"])
    return root


def _examples(pair: Path, tok: object, split: str) -> list[object]:
    from leaf.data.records import load_samples
    from leaf.distill.data import build_example

    samples = [s for fam in ("add", "two-step") for s in load_samples(pair / "bench" / f"{fam}.{split}.jsonl")]
    return [build_example(tok, s, counterfactual=split == "counterfactual") for s in samples]


def test_batched_saliency_equals_unbatched_on_the_real_model(smol: tuple[object, object], pair: Path) -> None:
    from leaf.detect.saliency import embedding_saliency, pad_batch

    model, tok = smol
    examples = _examples(pair, tok, "distracted")
    assert len({len(e.input_ids) for e in examples}) > 1  # the batch really pads
    ids, att, tgt = pad_batch([e.input_ids for e in examples], [[i for i, lab in enumerate(e.labels) if lab != -100]
                                                                for e in examples],
                              tok.pad_token_id)  # type: ignore[attr-defined]
    batched, loss = embedding_saliency(model, ids, att, tgt)
    for b, e in enumerate(examples):
        n = len(e.input_ids)
        alone, loss1 = embedding_saliency(model, ids[b:b + 1, :n], att[b:b + 1, :n], tgt[b:b + 1, :n])
        torch.testing.assert_close(batched[b, :n], alone[0], rtol=1e-4, atol=1e-5 * float(alone.max()))
        assert float(batched[b, n:].abs().sum()) == 0.0  # padding carries no saliency
        assert loss[b].item() == pytest.approx(loss1.item(), rel=1e-5)
        assert alone[0].min() >= 0 and alone[0].max() > 0


def test_packed_saliency_equals_padded_on_the_real_model(smol: tuple[object, object], pair: Path) -> None:
    """One packed row of the real model (position ids restarting per sample, no mask) gives the padded numbers."""
    from leaf.detect.saliency import embedding_saliency, pack_batch, pad_batch

    model, tok = smol
    examples = _examples(pair, tok, "distracted")
    seqs = [e.input_ids for e in examples]
    targets = [[i for i, lab in enumerate(e.labels) if lab != -100] for e in examples]
    padded, loss = embedding_saliency(model, *pad_batch(seqs, targets, tok.pad_token_id))  # type: ignore[attr-defined]
    ids, att, tgt, rows, starts = pack_batch(seqs, targets, tok.pad_token_id)  # type: ignore[attr-defined]
    packed, packed_loss = embedding_saliency(model, ids, att, tgt, packed=rows)
    torch.testing.assert_close(packed_loss, loss, rtol=1e-5, atol=1e-6)
    for b, (seq, start) in enumerate(zip(seqs, starts)):
        want = padded[b, :len(seq)]
        torch.testing.assert_close(packed[0, start:start + len(seq)], want, rtol=1e-4, atol=1e-5 * float(want.max()))


def test_detect_batched_equals_one_at_a_time_on_the_real_pair(pair: Path, tmp_path: Path) -> None:
    from leaf.data.detections import read_detections
    from leaf.detect import detect

    data = pair / "bench" / "add.distracted.jsonl"
    runs = {}
    for bs in (1, 4):
        out = tmp_path / f"det{bs}.jsonl"
        detect(teacher=str(SMOL), student=str(pair / "student"), data=data, out=out, batch_size=bs, dtype="float32",
               device="cpu", progress=False)
        runs[bs] = {d.unit_key: d for d in read_detections(out)}
    assert runs[1].keys() == runs[4].keys() and len(runs[1]) == 4
    for key, one in runs[1].items():
        four = runs[4][key]
        assert [t.flag for t in one.tokens] == [t.flag for t in four.tokens] and one.spans == four.spans
        for a, b in zip(one.tokens, four.tokens):
            assert a.g_teacher == pytest.approx(b.g_teacher, rel=1e-3, abs=1e-5)
            assert a.g_student == pytest.approx(b.g_student, rel=1e-3, abs=1e-5)
    assert any(t.flag for d in runs[1].values() for t in d.tokens)  # the pair really differs somewhere


def _independent_loss(teacher: object, student: object, examples: list[object], lam: float) -> torch.Tensor:
    """lam x mean KL over original loss tokens + (1 - lam) x mean over counterfactual ones, full logits."""
    total = {False: torch.zeros((), dtype=torch.float64), True: torch.zeros((), dtype=torch.float64)}
    count = {False: 0, True: 0}
    for ex in examples:
        ids = torch.tensor([ex.input_ids])  # type: ignore[attr-defined]
        with torch.no_grad():
            t_logits = teacher(ids).logits[0, :-1]  # type: ignore[operator]
        s_logp = torch.log_softmax(student(ids).logits[0, :-1].double(), -1)  # type: ignore[operator]
        kl = torch.nn.functional.kl_div(s_logp, torch.log_softmax(t_logits.double(), -1), log_target=True,
                                        reduction="none").sum(-1)
        mask = torch.tensor(ex.labels[1:]) != -100  # type: ignore[attr-defined]
        total[ex.counterfactual] = total[ex.counterfactual] + kl[mask].sum()  # type: ignore[attr-defined]
        count[ex.counterfactual] += int(mask.sum())  # type: ignore[attr-defined]
    return lam * total[False] / count[False] + (1 - lam) * total[True] / count[True]


def test_one_distillation_step_on_the_real_pair_matches_an_independent_computation(
        smol: tuple[object, object], pair: Path, tmp_path: Path) -> None:
    """`leaf distill` (KD + counterfactual term, SGD, one step over the whole set) logs the loss of a
    full-logit float64 computation, and the loss then falls by lr x |grad|^2 to first order."""
    from leaf.distill import distill

    teacher, tok = smol
    student = load_model(str(pair / "student"), dtype="float32", device="cpu")
    examples = _examples(pair, tok, "distracted") + _examples(pair, tok, "counterfactual")
    params = list(student.parameters())  # type: ignore[attr-defined]
    for p in params:
        p.requires_grad_(True)  # load_model hands out frozen weights
    loss0 = _independent_loss(teacher, student, examples, 0.5)
    grads = torch.autograd.grad(loss0, params)
    g2 = sum(float(g.double().pow(2).sum()) for g in grads)
    lr = 0.02 * loss0.item() / g2  # a step that should lower the loss by about 2 %

    data = tmp_path / "d.jsonl"
    cf = tmp_path / "cf.jsonl"
    data.write_text("".join((pair / "bench" / f"{f}.distracted.jsonl").read_text() for f in ("add", "two-step")))
    cf.write_text("".join((pair / "bench" / f"{f}.counterfactual.jsonl").read_text() for f in ("add", "two-step")))
    out = distill(student=str(pair / "student"), teacher=str(SMOL), data=data, counterfactuals=cf, out=tmp_path / "run",
                  lam=0.5, max_steps=1, batch_size=len(examples), grad_accum=1, learning_rate=lr, warmup_steps=0,
                  optim="sgd", max_grad_norm=0.0, precision="fp32", save_steps=1000, chunked_head="always").out
    (row,) = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert row["loss"] == pytest.approx(loss0.item(), rel=1e-4)
    after = _independent_loss(teacher, load_model(str(out), dtype="float32", device="cpu"), examples, 0.5).item()
    drop, predicted = loss0.item() - after, lr * g2
    assert drop > 0
    assert abs(drop / predicted - 1) < 0.15


def test_gradient_detection_flags_the_irrelevant_sentence_more_often_than_random(pair: Path, tmp_path: Path) -> None:
    """60 distracted problems, the real model as teacher and its every-other-layer student: the gradient rule's
    flags fall inside the irrelevant sentence (the benchmark's known character spans) more often than a random
    pick of as many eligible tokens per problem, whose expectation and spread are computed exactly here
    (hypergeometric per problem); and more problems have a flag there than random's expected count."""
    from math import comb

    from leaf.data.detections import read_detections
    from leaf.data.distractors import distractors
    from leaf.data.jsonl import read_jsonl
    from leaf.data.spans import overlaps
    from leaf.detect import detect

    bench = tmp_path / "bench"
    distractors(out=bench, n=20, seed=0, families=["add", "one-step", "two-step"])
    truth = {str(r["id"]): r["meta"]["confounder_spans"] for r in read_jsonl(bench / "distracted.jsonl")}
    out = tmp_path / "det.jsonl"
    detect(teacher=str(SMOL), student=str(pair / "student"), data=bench / "distracted.jsonl", out=out, batch_size=4,
           dtype="float32", device="cpu", progress=False)
    inside = hits = 0
    mean = var = hit_mean = 0.0
    detections = read_detections(out)
    assert len(detections) == 60
    for det in detections:
        spans = truth[str(det.id)]
        tokens = [t for t in det.tokens_of("instruction") if t.text.strip()]
        flagged = [t for t in tokens if t.flag]
        e, i, n = len(tokens), sum(overlaps(t.start, t.end, spans) for t in tokens), len(flagged)
        assert i > 0  # every problem has its sentence among the scored tokens
        k = sum(overlaps(t.start, t.end, spans) for t in flagged)
        inside += k
        hits += k > 0
        mean += n * i / e
        var += n * (i / e) * (1 - i / e) * (e - n) / (e - 1) if e > 1 else 0.0
        hit_mean += 1 - comb(e - i, n) / comb(e, n)
    assert sum(t.flag for d in detections for t in d.tokens_of("instruction")) >= 30  # a real budget, not a handful
    assert inside > mean + 2 * var**0.5, (inside, mean, var**0.5)
    assert hits > hit_mean, (hits, hit_mean)
