"""leaf.detect.scoring: a batch of prepared samples -> Detection records, checked piece by piece."""

from __future__ import annotations

import pytest
import torch

from leaf.batching import pad
from leaf.data.records import Sample
from leaf.detect.decision import confounder_scores, flag_threshold, merge_spans, whitespace_mask
from leaf.detect.prepare import prepare
from leaf.detect.saliency import embedding_saliency
from leaf.detect.scoring import DetectionScorer
from leaf.tiny import build_model

SAMPLES = [
    Sample(id="a", instruction="Tom has 3 apples and gets 2 more. How many?", response="The answer is 5."),
    Sample(id="b", instruction="Ignore 9. Ann has 4 pears.", response="She has 4 pears. The answer is 4."),
]


@pytest.fixture(scope="module")
def scorer(llama_tok):
    teacher = build_model(llama_tok, arch="llama", hidden_size=48, num_layers=3, seed=11).requires_grad_(False)
    student = build_model(llama_tok, arch="llama", hidden_size=32, num_layers=2, seed=12).requires_grad_(False)
    pad_id = llama_tok.pad_token_id
    return DetectionScorer(teacher, student, {"teacher": pad_id, "student": pad_id}, {"tau": 0.3})


def _saliency(model, view, pad_id):
    ids, att = pad([view.input_ids], pad_id)
    tgt = torch.zeros_like(ids, dtype=torch.bool)
    tgt[0, view.targets] = True
    sal, loss = embedding_saliency(model, ids, att, tgt)
    return sal[0, view.scored], float(loss[0])


def test_records_follow_the_saliencies_and_the_decision_rule(scorer, llama_tok):
    batch = [prepare(s, {"teacher": llama_tok, "student": llama_tok}, max_length=256) for s in SAMPLES]
    detections = scorer.score_batch(batch)
    assert [d.id for d in detections] == ["a", "b"]
    for p, det in zip(batch, detections):
        view = p.views["student"]
        g_t, loss_t = _saliency(scorer.teacher, p.views["teacher"], llama_tok.pad_token_id)
        g_s, loss_s = _saliency(scorer.student, view, llama_tok.pad_token_id)
        # the stored numbers are each model's own saliency and loss (rounded to 6 significant digits)
        assert [t.g_teacher for t in det.tokens] == pytest.approx(g_t.tolist(), rel=1e-4, abs=1e-9)
        assert [t.g_student for t in det.tokens] == pytest.approx(g_s.tolist(), rel=1e-4, abs=1e-9)
        assert det.loss_teacher == pytest.approx(loss_t, rel=1e-4) and det.loss_student == pytest.approx(loss_s, rel=1e-4)
        # flags are the threshold rule on d, never on white space; spans merge the flagged tokens
        d = confounder_scores(g_t, g_s)
        eligible = ~whitespace_mask([t.text for t in det.tokens])
        assert [t.flag for t in det.tokens] == flag_threshold(d, 0.3, eligible).tolist()
        assert [t.score for t in det.tokens] == pytest.approx(d.tolist(), abs=1e-5)
        flags = [t.flag for t in det.tokens]
        assert det.spans == merge_spans(view.offsets, flags, p.sample.instruction)
        assert det.level == "instruction" and det.key is None and det.truncated == 0
        assert det.to_json()["tokens"][0].keys() == {"text", "start", "end", "g_teacher", "g_student", "score", "flag"}


def test_response_level_record_names_its_segment(scorer, llama_tok):
    s = Sample(id="r", instruction="Add 2 and 3.", response="First, 2 + 3 = 5.\n\nSo the answer is 5.")
    start = s.response.index("So")
    p = prepare(s, {"teacher": llama_tok, "student": llama_tok}, max_length=256, loss_start=start,
                loss_end=len(s.response), key="r@1")
    (det,) = scorer.score_batch([p])
    assert (det.level, det.key, det.segment, det.loss_start, det.loss_end) == ("response", "r@1", 1, start,
                                                                                len(s.response))
    assert {t.field for t in det.tokens} == {"instruction", "response"}
    assert list(det.to_json())[:2] == ["id", "key"]
