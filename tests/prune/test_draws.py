"""Resample sources and draws: one draw is the old output byte for byte, K draws, duplicates, uniform statistics."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from leaf.cli import main
from leaf.data.counterfactuals import read_counterfactuals
from leaf.data.detections import as_detection
from leaf.data.jsonl import meta_path, read_jsonl
from leaf.data.records import Sample
from leaf.prune import prune
from leaf.prune.counterfactuals import build_records
from leaf.prune.interventions import Replacement, Resampler, draw_seed, token_kind

from .golden import (
    CASES,
    FIXTURES,
    SAMPLES,
    detection,
    run_fixture,
    tokenizer,
    write_inputs,
)

OLD_SUMMARY_KEYS = {"samples", "detections", "samples_with_spans", "spans", "spans_per_sample",
                    "spans_per_sample_with_spans", "instruction_tokens", "removed_tokens", "removed_token_share",
                    "records_written", "dropped_empty", "no_detection", "verified_kept", "verified_dropped",
                    "top_pruned"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prune-inputs")
    write_inputs(folder)
    return folder


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


@pytest.mark.parametrize(("intervention", "strategy"), CASES)
def test_one_draw_is_byte_identical_to_the_output_before_draws(inputs, tmp_path, intervention, strategy):
    """The golden files were written by the code before --draws / uniform (tests/prune/golden.py)."""
    out = run_fixture(inputs, intervention, strategy, draws=1)
    assert out.read_bytes() == (FIXTURES / f"golden-{intervention}-{strategy}.jsonl").read_bytes()
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert set(summary) == OLD_SUMMARY_KEYS  # the summary keeps the keys it always had
    sidecar = json.loads(meta_path(out).read_text())
    assert sidecar["schema_version"] == 2
    if intervention == "resample":  # the sidecar names every resample run's source
        assert {k: sidecar[k] for k in ("resample_from", "draws", "seed")} == {"resample_from": "student",
                                                                               "draws": 1, "seed": 0}
    else:
        assert "resample_from" not in sidecar


def _by_group(records):
    groups: dict[str, list] = {}
    for r in records:
        groups.setdefault(r.id.rsplit("#d", 1)[0], []).append(r)
    return groups


@pytest.mark.parametrize("strategy", ["span", "collective"])
def test_k_draws_give_k_records_per_group_whose_first_is_the_one_draw_record(inputs, strategy):
    out = run_fixture(inputs, "resample", strategy, draws=3)
    records = read_counterfactuals(out)
    golden = {r["id"]: r for r in read_jsonl(FIXTURES / f"golden-resample-{strategy}.jsonl")}
    groups = _by_group(records)
    assert set(groups) == set(golden)  # every group of the one-draw run, no other
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert summary["draws"] == 3 and summary["resample_from"] == "student"
    assert summary["records_written"] + summary["duplicate_draws"] == 3 * len(golden)
    for rid, recs in groups.items():
        assert [r.id for r in recs] == [f"{rid}#d{r.draw}" for r in recs]
        assert all(r.resample_from == "student" and r.intervention == "resample" for r in recs)
        assert recs[0].draw == 0
        first = {**recs[0].to_json(), "id": rid}
        del first["resample_from"], first["draw"]
        assert first == golden[rid]  # draw 0 is seeded as the single draw was
        assert len({(r.instruction, r.response) for r in recs}) == len(recs)  # duplicates were skipped
    assert any(len({r.instruction for r in recs}) > 1 for recs in groups.values())  # draws differ


def test_duplicate_draws_are_skipped_and_named():
    """A replacer that repeats itself: the repeats are dropped as duplicates, kept draws keep their index."""
    det = as_detection({"id": "x", "level": "instruction", "method": "gradient", "spans": [[4, 6]],
                        "tokens": [{"text": " 12", "start": 3, "end": 6, "score": 0.0, "flag": True}]})
    sample = Sample(id="x", instruction="Say 12 now.", response="r")
    values = ["7", "8", "7", "9", "8"]

    def replacer(rid, sample, det, tokens, draw=0):
        return [Replacement("instruction", 4, 6, values[draw])]

    recs, dropped = build_records(sample, det, intervention="resample", replacer=replacer, draws=5,
                                  resample_from="uniform")
    assert [(r.id, r.instruction, r.draw) for r in recs] == [
        ("x#s0#d0", "Say 7 now.", 0), ("x#s0#d1", "Say 8 now.", 1), ("x#s0#d3", "Say 9 now.", 3)]
    assert [(d.key, d.reason, d.duplicate) for d in dropped] == [
        ("x#s0#d2", "duplicate draw: same text as x#s0#d0", True),
        ("x#s0#d4", "duplicate draw: same text as x#s0#d1", True)]
    # a group with nothing replaceable is dropped once, under its plain id, whatever the number of draws
    recs, dropped = build_records(sample, det, intervention="resample", replacer=lambda *a, **k: [], draws=5)
    assert recs == [] and [(d.key, d.duplicate) for d in dropped] == [("x#s0", False)]


def test_many_uniform_draws_never_exceed_the_candidates(inputs, tok):
    """Span ' 3' has 7 same-kind candidates: 60 draws give 7 distinct records, the rest are duplicates."""
    out = run_fixture(inputs, "resample", "span", draws=60, resample_from="uniform")
    groups = _by_group(read_counterfactuals(out))
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert summary["records_written"] + summary["duplicate_draws"] == 60 * len(groups) == 60 * 7
    assert summary["dropped_empty"] == 1  # the span of ',' alone: nothing to replace, dropped once, not per draw
    assert summary["records_written"] == sum(len(g) for g in groups.values())
    (three,) = [g for g in groups.values() if g[0].changes[0].text == " 3"]
    assert [c.text for r in three for c in r.changes] == [" 3"] * len(three)
    assert sorted(r.changes[0].replacement for r in three) == [" 1", " 12", " 4", " 44", " 5", " 7", " 9"]
    assert len(three) == 7


def test_uniform_loads_no_model(inputs, monkeypatch):
    import transformers

    import leaf.models

    def no_model(*args, **kwargs):
        raise AssertionError("--resample-from uniform must not load a model")

    monkeypatch.setattr(leaf.models, "load_model", no_model)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_model)
    out = run_fixture(inputs, "resample", "collective", resample_from="uniform", seed=5)
    records = read_counterfactuals(out)
    assert len(records) == 2 and all((r.resample_from, r.draw) == ("uniform", 0) for r in records)
    assert [r.id for r in records] == ["s#c", "t#c"]  # one draw: the plain ids
    again = run_fixture(inputs, "resample", "collective", resample_from="uniform", seed=5)
    assert [r.instruction for r in read_counterfactuals(again)] == [r.instruction for r in records]  # seeded
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert (summary["resample_from"], summary["draws"], summary["duplicate_draws"]) == ("uniform", 1, 0)
    # the teacher's tokenizer serves as well when no student is named
    prune(data=inputs / "data.jsonl", detections=inputs / "det.jsonl", out=inputs / "u.jsonl",
          intervention="resample", strategy="collective", resample_from="uniform", teacher=str(inputs / "student"),
          seed=5)
    assert [r.instruction for r in read_counterfactuals(inputs / "u.jsonl")] == [r.instruction for r in records]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--draws", "2"], "--draws 2 needs --intervention resample (--intervention delete draws nothing"),
        (["--draws", "3", "--intervention", "mask"], "--draws 3 needs --intervention resample"),
        (["--draws", "0", "--intervention", "resample", "--student", "S"], "option 'draws': 0 is outside [1, inf]"),
        (["--intervention", "resample", "--resample-from", "uniform"],
         "--resample-from uniform needs --student (or --teacher)"),
        (["--intervention", "resample", "--resample-from", "teacher", "--student", "S"],
         "--intervention resample needs --teacher"),
    ],
)
def test_bad_draw_and_source_settings_are_refused(inputs, tmp_path, capsys, flags, message):
    out = tmp_path / "o.jsonl"
    assert main(["prune", "--data", str(inputs / "data.jsonl"), "--detections", str(inputs / "det.jsonl"),
                 "--out", str(out), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_build_records_refuses_draws_without_resample():
    det = as_detection({"id": "x", "level": "instruction", "method": "gradient", "spans": [[4, 6]],
                        "tokens": [{"text": " 12", "start": 3, "end": 6, "score": 0.0, "flag": True}]})
    sample = Sample(id="x", instruction="Say 12 now.", response="r")
    with pytest.raises(ValueError, match="2 draws need the resample intervention"):
        build_records(sample, det, intervention="mask", replacer=lambda *a: [], draws=2)
    with pytest.raises(ValueError, match="draws must be an integer >= 1, got 0"):
        build_records(sample, det, intervention="resample", replacer=lambda *a, **k: [], draws=0)


def _valid_candidates(tok, original: int) -> set[str]:
    """Same kind, same leading white space, not special, not a byte piece, not the original (computed afresh)."""
    special = set(tok.all_special_ids)
    want = tok.decode([original])
    out = []
    for i in range(len(tok)):
        text = tok.decode([i])
        if (i != original and i not in special and "\ufffd" not in text and token_kind(text) == token_kind(want)
                and text[:1].isspace() == want[:1].isspace()):
            out.append(text)
    assert len(out) == len(set(out))  # one text per candidate: counting texts counts tokens
    return set(out)


def _chi2_quantile(df: int, z: float) -> float:
    """Upper quantile of chi-square(df) at normal quantile ``z`` (Wilson-Hilferty)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("flagged", ["12", "apples"])
def test_uniform_draws_are_uniform_over_the_valid_candidates(tok, flagged):
    sample = SAMPLES[0][0]
    det = as_detection(detection(tok, sample, {flagged}))
    (token,) = [t for t in det.tokens if t.flag]
    original = tok.convert_tokens_to_ids(tok.tokenize(token.text))
    assert len(original) == 1
    valid = _valid_candidates(tok, original[0])
    n = len(valid)
    assert n == {"12": 7, "apples": 9}[flagged]
    resampler = Resampler(None, tok, seed=11)
    draws = 300 * n
    counts = Counter()
    for k in range(draws):  # the draws of one record, then of other records: both seeds are uniform
        rid, draw = ("r", k) if k < draws // 2 else (f"r{k}", 0)
        (rep,) = resampler.replacements(rid, sample, det, [token], draw=draw)
        assert (rep.field, rep.start, rep.end) == (token.field, token.start, token.end)
        counts[rep.text] += 1
    assert set(counts) == valid  # every valid candidate drawn, no invalid one ever
    expected = draws / n
    sd = math.sqrt(draws * (1 / n) * (1 - 1 / n))
    for text, c in counts.items():
        assert abs(c - expected) <= 5 * sd, (text, c, expected)
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 <= _chi2_quantile(n - 1, 4.0), (chi2, counts)  # p ~ 3e-5 under uniformity


def test_draw_seeds():
    assert draw_seed(0, "a#s0") == draw_seed(0, "a#s0", 0)  # draw 0: the one-draw seed
    seeds = {draw_seed(s, r, k) for s in (0, 1) for r in ("a#s0", "a#s1") for k in range(4)}
    assert len(seeds) == 16
