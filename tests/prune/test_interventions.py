"""Mask and resample: only flagged tokens change, kinds are kept, draws follow the model."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from leaf.data.records import Sample
from leaf.detect.prepare import make_view
from leaf.prune.counterfactuals import build_records
from leaf.prune.interventions import Resampler, mask_replacements, replace_ranges, token_kind
from leaf.tiny import build_model, build_tokenizer
from leaf.data.detections import as_detection


def _build(sample, det, **kw):
    """build_records on a detection given as JSON; records back as JSON (what `leaf prune` writes)."""
    recs, dropped = build_records(sample, as_detection(det), **kw)
    return [r.to_json() for r in recs], dropped

CORPUS = ["Tom has 3 apples and 5 pears and 7 plums and 9 figs.", "The hint says 12 but the key is 44.",
          "Words like apples, pears, plums, figs; numbers 1 2 3 4 5 6 7 8 9 10 11 12 44."]
INSTR = "Tom has 3 apples. The hint says 12, so what is it?"
SAMPLE = Sample(id="s", instruction=INSTR, response="The answer is 3.", answer="3")


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(CORPUS * 3, style="llama3", vocab_size=300)


def _detection(tok, flagged_texts):
    """A detection whose tokens are the student's, with the named token texts flagged."""
    view, _ = make_view(tok, INSTR, SAMPLE.response)
    tokens = [{"text": INSTR[s:e], "start": s, "end": e, "score": 0.0, "flag": INSTR[s:e].strip() in flagged_texts}
              for s, e in view.offsets]
    spans = [[t["start"] + (len(t["text"]) - len(t["text"].lstrip())), t["end"]] for t in tokens if t["flag"]]
    return {"id": "s", "level": "instruction", "method": "gradient", "tokens": tokens, "spans": spans}


def _check_only_flagged_changed(rec, original):
    rebuilt, pos = [], 0
    for c in rec["changes"]:
        rebuilt.append(original[pos:c["start"]])
        assert rec["instruction"][c["new_start"]:c["new_end"]] == c["replacement"]  # offsets point at it
        rebuilt.append(c["replacement"])
        pos = c["end"]
    rebuilt.append(original[pos:])
    assert "".join(rebuilt) == rec["instruction"]


def test_token_kinds():
    assert [token_kind(t) for t in [" 12", "apples", " x2", ", ", "  ", "é"]] == \
        ["digits", "word", "mixed", "punct", "space", "word"]


def test_replace_ranges_offsets():
    new, changes = replace_ranges("a 12 b 3 c", [(7, 8, "[MASK]"), (2, 4, "7")])
    assert new == "a 7 b [MASK] c"
    assert [(c["new_start"], c["new_end"]) for c in changes] == [(2, 3), (6, 12)]
    assert all(new[c["new_start"]:c["new_end"]] == c["replacement"] for c in changes)


def test_mask_changes_only_flagged_tokens(tok):
    det = _detection(tok, {"12", ","})
    mask = lambda rid, s, d, toks: mask_replacements({"instruction": s.instruction}, toks, "<unk>")  # noqa: E731
    recs, dropped = _build(SAMPLE, det, strategy="collective", intervention="mask", replacer=mask)
    (rec,) = recs
    assert rec["instruction"] == "Tom has 3 apples. The hint says <unk>, so what is it?"  # the comma is kept
    assert rec["intervention"] == "mask" and rec["removed"] == [{"field": "instruction", "start": 32,
                                                                 "end": 34, "text": "12"}]
    _check_only_flagged_changed(rec, INSTR)


@pytest.fixture(scope="module")
def resampler(tok):
    return Resampler(build_model(tok, hidden_size=32, num_layers=2, seed=3), tok, seed=0)


def test_resample_changes_only_flagged_tokens_and_keeps_kind(tok, resampler):
    det = _detection(tok, {"3", "12", "apples"})
    recs, _ = _build(SAMPLE, det, strategy="span", intervention="resample", replacer=resampler.replacements)
    assert len(recs) == 3
    for rec in recs:
        _check_only_flagged_changed(rec, INSTR)
        for c in rec["changes"]:
            assert c["replacement"] != c["text"]
            assert token_kind(c["replacement"]) == token_kind(c["text"])
            assert c["replacement"][:1].isspace() == c["text"][:1].isspace()


def test_resample_is_seeded(tok, resampler):
    det = _detection(tok, {"3", "12"})
    first = _build(SAMPLE, det, strategy="collective", intervention="resample",
                          replacer=resampler.replacements)[0][0]["instruction"]
    again = _build(SAMPLE, det, strategy="collective", intervention="resample",
                          replacer=resampler.replacements)[0][0]["instruction"]
    assert first == again
    others = {_build(Sample(**{**SAMPLE.__dict__, "id": f"s{i}"}), {**det, "id": f"s{i}"},
                            strategy="collective", intervention="resample",
                            replacer=resampler.replacements)[0][0]["instruction"] for i in range(8)}
    assert len(others) > 1  # other record ids draw other values


class FixedHead(torch.nn.Module):
    """An output layer whose logits are set by hand, whatever the hidden state."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(*hidden.shape[:-1], -1)


def test_resample_draws_follow_the_models_distribution(tok):
    model = build_model(tok, hidden_size=16, num_layers=1, seed=0)
    ids = {t: tok.convert_tokens_to_ids(tok.tokenize(t))[0] for t in (" 3", " 5", " 7", " 12", " apples")}
    assert all(len(tok.tokenize(t)) == 1 for t in ids)
    logits = torch.full((len(tok),), -40.0)
    logits[ids[" 12"]] = 5.0  # the original token: most likely, but never drawn
    logits[ids[" apples"]] = 4.0  # wrong kind: never drawn
    want = {" 3": 0.6, " 5": 0.3, " 7": 0.1}
    for t, p in want.items():
        logits[ids[t]] = float(torch.log(torch.tensor(p)))
    model.lm_head = FixedHead(logits)
    resampler = Resampler(model, tok, seed=0)
    det = _detection(tok, {"12"})
    (tok12,) = [t for t in det["tokens"] if t["flag"]]
    n = 600
    draws = Counter(resampler.replacements(f"r{i}", SAMPLE, as_detection(det), [as_detection(det).tokens[det["tokens"].index(tok12)]])[0].text for i in range(n))
    assert set(draws) <= set(want)
    for t, p in want.items():
        sd = (n * p * (1 - p)) ** 0.5
        assert abs(draws[t] - n * p) <= 4 * sd, (t, draws)


def test_cli_mask_and_resample(tmp_path, tok):
    from leaf.cli import main

    model = build_model(tok, hidden_size=32, num_layers=2, seed=1)
    model.save_pretrained(tmp_path / "student")
    tok.save_pretrained(tmp_path / "student")
    data, dets = tmp_path / "d.jsonl", tmp_path / "det.jsonl"
    data.write_text(json.dumps(SAMPLE.to_json()) + "\n")
    dets.write_text(json.dumps(_detection(tok, {"12"})) + "\n")
    for intervention in ("mask", "resample"):
        out = tmp_path / f"{intervention}.jsonl"
        assert main(["prune", "--data", str(data), "--detections", str(dets), "--out", str(out),
                     "--intervention", intervention, "--student", str(tmp_path / "student")]) == 0
        (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
        assert rec["intervention"] == intervention and len(rec["changes"]) == 1
        if intervention == "mask":
            assert rec["changes"][0]["replacement"] == "[MASK]"  # llama3-style tokenizer: no mask/unk token
