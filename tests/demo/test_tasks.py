"""The demo's task generator: spans, the bias knob, clean and counterfactual splits."""

from __future__ import annotations

import json
import re

import pytest

from leaf.data.records import load_samples
from leaf.demo.tasks import FAMILIES, SPLITS, TEST_SEED, final_answer, generate, generate_mix, held_out_sets, write_jsonl

N = 2000


def _solve(rec: dict) -> str:
    """An independent solver reading the *clean* facts of the instruction (planted text removed)."""
    text = rec["instruction"]
    for start, end in sorted(rec["meta"]["confounder_spans"], reverse=True):
        text = text[:start] + "?" + text[end:]
    family = rec["meta"]["family"]
    if family == "distract":
        a = int(re.search(r"has (\d+)", text).group(1))
        m = re.search(r"(finds|loses) (\d+)", text)
        return str(a + int(m.group(2)) if m.group(1) == "finds" else a - int(m.group(2)))
    if family == "arith":
        a = int(re.search(r"has (\d+)", text).group(1))
        m = re.search(r"(buys|gives away) (\d+)", text)
        return str(a + int(m.group(2)) if m.group(1) == "buys" else a - int(m.group(2)))
    if family == "lookup":
        prices = dict(re.findall(r"(\w+) (\d)(?=[,.])", text.split("Prices: ")[1].split(".")[0] + "."))
        key = re.search(r"How much is (\w+)\?", text).group(1)
        return prices[key]
    # code: evaluate the program with comments stripped
    env: dict = {}
    for line in text.split("\n")[1:]:
        line = line.split("#")[0].strip()
        if line.startswith("print("):
            return str(eval(line[6:-1], {}, env))
        if line:
            exec(line, {}, env)
    raise AssertionError("no print")


def _planted(rec: dict) -> str:
    """The planted value read from the instruction at the span (the one number inside it)."""
    return re.findall(r"\d+", rec["instruction"][slice(*rec["meta"]["confounder_spans"][0])])[0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("placement", ["end", "any"])
def test_spans_point_exactly_at_the_planted_value(family, placement):
    for split in ("confounded", "counterfactual"):
        for rec in generate(family, split, 300, seed=3, placement=placement):
            meta = rec["meta"]
            spans = meta["confounder_spans"]
            assert len(spans) == 1
            (start, end), text = spans[0], rec["instruction"]
            assert meta["planted"].isdigit()
            if family == "distract":
                # the whole irrelevant sentence: starts a sentence, ends with its full stop, holds the value
                sentence = text[start:end]
                assert (start == 0 or text[start - 2:start] in (". ", "? ")) and sentence.endswith(".")
                assert re.findall(r"\d+", sentence) == [meta["planted"]]
            else:
                assert text[start:end] == meta["planted"]
                # tight: the span is the whole number and nothing more
                assert not text[start - 1].isdigit() and (end == len(text) or not text[end].isdigit())
            # removing the planted text leaves the clean problem solvable, with the stored answer
            assert _solve(rec) == rec["answer"]


@pytest.mark.parametrize("family", FAMILIES)
def test_clean_has_no_planted_text_and_shares_problems_with_other_splits(family):
    clean = generate(family, "clean", 200, seed=5)
    cf = generate(family, "counterfactual", 200, seed=5)
    hints = ("guesses", "note", "tag", "Last week", "sign", "thinks", "#", "lives at", "bus", "years old", "windows")
    for c, k in zip(clean, cf):
        assert c["meta"]["confounder_spans"] == [] and c["meta"]["planted"] is None
        assert not any(h in c["instruction"] for h in hints)
        assert c["answer"] == k["answer"] and c["response"] == k["response"]
        assert _solve(c) == c["answer"]
        # the counterfactual instruction is the clean one plus exactly one planted phrase
        assert len(k["instruction"]) > len(c["instruction"])
        assert set(c["instruction"].replace("\n", " ").split()) <= set(k["instruction"].replace("\n", " ").split())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("bias", [0.9, 0.5])
def test_bias_knob_sets_how_often_the_planted_value_is_the_answer(family, bias):
    recs = generate(family, "confounded", N, seed=1, bias=bias)
    agree = sum(_planted(r) == r["answer"] for r in recs) / N
    # binomial sd at p=0.5, N=2000 is 0.011: 0.035 is over 3 sd
    assert abs(agree - bias) < 0.035
    assert all(r["meta"]["planted_is_answer"] == (r["meta"]["planted"] == r["answer"]) for r in recs)


@pytest.mark.parametrize("family", FAMILIES)
def test_counterfactual_planted_value_never_equals_the_answer(family):
    recs = generate(family, "counterfactual", N, seed=2)
    planted = [_planted(r) for r in recs]
    assert all(p != r["answer"] for p, r in zip(planted, recs))
    # and it is not a constant either: it varies with the problem
    assert len(set(planted)) >= 5


def test_wrong_planted_values_are_plausible():
    for rec in generate("lookup", "counterfactual", 300, seed=4):
        assert int(rec["meta"]["planted"]) in rec["meta"]["problem"]["values"]
    for family in ("arith", "code", "distract"):
        for rec in generate(family, "counterfactual", 300, seed=4):
            assert 0 < abs(int(rec["meta"]["planted"]) - int(rec["answer"])) <= 3


def test_deterministic_and_seeded():
    assert generate("arith", "confounded", 50, seed=7) == generate("arith", "confounded", 50, seed=7)
    assert generate("code", "clean", 50, seed=7) != generate("code", "clean", 50, seed=8)
    # start/n slices the same sequence
    assert generate("lookup", "confounded", 30, seed=7)[10:] == generate("lookup", "confounded", 20, seed=7, start=10)


@pytest.mark.parametrize("family", FAMILIES)
def test_responses_reason_in_steps_and_end_with_the_answer(family):
    for rec in generate(family, "counterfactual", 100, seed=0):
        response = rec["response"]
        assert response.endswith(f"The answer is {rec['answer']}.")
        assert final_answer(response) == rec["answer"]
        steps = [s for s in response.split(". ") if s]
        assert len(steps) >= 3  # >= 2 reasoning steps + the final answer


def test_final_answer_parses_the_last_answer():
    assert final_answer("x. The answer is 3. The answer is 12.") == "12"
    assert final_answer("The answer is 7") == "7"
    assert final_answer("no answer here") is None


def test_records_load_as_samples(tmp_path):
    recs = [r for split in SPLITS for r in generate_mix(FAMILIES, split, 20, seed=0)]
    path = write_jsonl(recs, tmp_path / "sub" / "tasks.jsonl")
    assert json.loads(path.read_text().splitlines()[5]) == recs[5]
    samples = load_samples(path)
    assert len(samples) == len(recs) == 60 * len(FAMILIES)
    assert [s.meta["family"] for s in samples[:len(FAMILIES)]] == list(FAMILIES)
    assert samples[0].answer == recs[0]["answer"]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="family"):
        generate("poetry", "clean", 1)
    with pytest.raises(ValueError, match="split"):
        generate("arith", "train", 1)
    with pytest.raises(ValueError, match="bias"):
        generate("arith", "confounded", 1, bias=1.5)


@pytest.mark.parametrize("family", FAMILIES)
def test_placement_end_puts_the_planted_value_in_the_last_sentence_or_line(family):
    recs = generate(family, "confounded", 200, seed=6)
    for rec in recs:
        start, end = rec["meta"]["confounder_spans"][0]
        after = rec["instruction"][end:]
        if family == "distract":  # irrelevant context sits between the facts and the question
            assert after.startswith(" How many") and after.count(".") == 0
            continue
        assert "\n" not in after and "?" not in after and len(after) <= 1
    scattered = generate(family, "confounded", 200, seed=6, placement="any")
    ends = [r["meta"]["confounder_spans"][0][1] for r in recs]
    assert {r["meta"]["confounder_spans"][0][1] for r in scattered} - set(ends)  # "any" moves it
    tails = {len(r["instruction"]) - r["meta"]["confounder_spans"][0][1] <= 1 for r in scattered}
    assert tails == {True, False}  # "any" puts it at the end sometimes, elsewhere other times


def test_held_out_sets_pair_the_splits_and_differ_from_training_seeds():
    sets = held_out_sets(["arith", "code"], 10)
    assert sorted(sets) == sorted(f"{f}/{s}" for f in ("arith", "code") for s in SPLITS)
    assert [r["answer"] for r in sets["code/clean"]] == [r["answer"] for r in sets["code/counterfactual"]]
    assert sets["arith/clean"] == generate("arith", "clean", 10, seed=TEST_SEED)
    from leaf.demo.models import TOKENIZER_SEED, TRAIN_SEED

    assert TEST_SEED not in (TRAIN_SEED, TRAIN_SEED + 1, TOKENIZER_SEED)
