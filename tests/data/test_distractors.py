"""``leaf distractors``: spans are the inserted sentences, answers re-derived from the text, splits agree."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from leaf.analyze.spans import load_span_samples
from leaf.checkers import checker_for
from leaf.cli import main
from leaf.config import ConfigError
from leaf.data.config import DISTRACTOR_FAMILIES, DISTRACTOR_KINDS, DISTRACTOR_POSITIONS
from leaf.data.counterfactuals import read_counterfactuals
from leaf.data.distractors import OBJECTS, distractors
from leaf.data.records import load_samples
from leaf.prune.text import prune_text

N = 18  # two turns of the 3 kinds x 3 positions
COMPARISON_PATTERN = r"####\s*([A-Z][a-z]+)"


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    distractors(out=out, n=N, seed=3)
    return out


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def splits(bench: Path, family: str) -> tuple[list[dict], list[dict], list[dict]]:
    return tuple(rows(bench / f"{family}.{s}.jsonl") for s in ("clean", "distracted", "counterfactual"))  # type: ignore


def solve(family: str, text: str) -> str:
    """The answer of a clean problem, read off its text alone (not from the generator's numbers)."""
    if family == "add":
        m = re.fullmatch(r"(\w+) has (\d+) (\w+) and buys (\d+) more\. How many \3 does \1 have\?", text)
        assert m, text
        return str(int(m[2]) + int(m[4]))
    if family == "one-step":
        m = re.fullmatch(r"(\w+) has (\d+) (\w+)\. \1 (?:buys (\d+) more|gives (\d+) \3 away)\. "
                         r"How many \3 does \1 have now\?", text)
        assert m, text
        a = int(m[2])
        return str(a + int(m[4]) if m[4] else a - int(m[5]))
    if family == "two-step":
        m = re.fullmatch(r"(\w+) has (\d+) (\w+)\. \1 buys (\d+) more\. Then \1 gives (\d+) \3 away\. "
                         r"How many \3 does \1 have now\?", text)
        assert m, text
        return str(int(m[2]) + int(m[4]) - int(m[5]))
    if family == "comparison":
        m = re.fullmatch(r"(\w+) has (\d+) (\w+)\. (\w+) has (\d+) \3\. Who has more \3\?", text)
        assert m and m[2] != m[5], text
        return m[1] if int(m[2]) > int(m[5]) else m[4]
    if family == "lookup":
        counts = dict(re.findall(r"(\w+) has (\d+) \w+\.", text))
        assert len(counts) == 3, text
        return counts[re.search(r"does (\w+) have\?$", text)[1]]
    assert family == "multi-hop"
    colour = dict(re.findall(r"(\w+)'s box is (\w+)\.", text))
    held = dict(re.findall(r"The (\w+) box holds (\d+) \w+\.", text))
    assert len(colour) == len(held) == 2, text
    return held[colour[re.search(r"are in (\w+)'s box\?$", text)[1]]]


@pytest.mark.parametrize("family", DISTRACTOR_FAMILIES)
def test_span_is_the_sentence_and_removing_it_gives_the_clean_problem(bench, family):
    clean, distracted, cf = splits(bench, family)
    assert len(clean) == len(distracted) == len(cf) == N
    for c, d, k in zip(clean, distracted, cf):
        (start, end), = d["meta"]["confounder_spans"]
        text = d["instruction"]
        sentence = text[start:end]
        assert sentence == d["meta"]["distractor"] and sentence[0].isupper() and sentence.endswith(".")
        assert text[end] == " " and (start == 0 or text[start - 1] == " ")  # whole sentences, one space apart
        assert text[:start] + text[end + 1:] == c["instruction"]
        assert prune_text(text, [(start, end)])[0] == c["instruction"]  # what leaf prune would make of it
        assert c["meta"]["confounder_spans"] == [] and d["meta"]["clean_id"] == c["id"]
        # the counterfactual is the pruned record of the distracted one: the clean text, the cut recorded
        assert k["source_id"] == d["id"] and k["instruction"] == c["instruction"]
        assert k["removed"] == [{"field": "instruction", "start": start, "end": end + 1, "text": sentence + " "}]
        assert c["answer"] == d["answer"] == k["answer"] and c["response"] == d["response"]


@pytest.mark.parametrize("family", DISTRACTOR_FAMILIES)
def test_answers_follow_from_the_text_and_the_reference_passes_the_checker(bench, family):
    clean, distracted, _ = splits(bench, family)
    checker = checker_for("exact", answer_pattern=COMPARISON_PATTERN) if family == "comparison" \
        else checker_for("math")
    for c, s in zip(clean, load_samples(bench / f"{family}.clean.jsonl")):
        assert solve(family, c["instruction"]) == c["answer"]
        assert c["response"].endswith(f"#### {c['answer']}") and checker.check(c["response"], s)
        assert not checker.check(c["response"].replace(f"#### {c['answer']}", "#### 999"), s)
    assert len({d["answer"] for d in distracted}) > 3  # the answers vary


@pytest.mark.parametrize("family", DISTRACTOR_FAMILIES)
def test_distractors_never_carry_the_answer_a_number_a_name_or_the_object_of_the_problem(bench, family):
    clean, distracted, _ = splits(bench, family)
    for c, d in zip(clean, distracted):
        sentence, kind = d["meta"]["distractor"], d["meta"]["kind"]
        used = set(re.findall(r"\d+", c["instruction"])) | {c["answer"]}
        found = re.findall(r"\d+", sentence)
        if kind == "name":
            assert found == [] and d["meta"]["distractor_number"] is None
            new = sentence.split()[0]
            assert new not in c["instruction"] and new != c["answer"]
        else:
            assert found == [str(d["meta"]["distractor_number"])] and not set(found) & used, (sentence, used)
        if kind == "related":
            obj = next(o for o in OBJECTS if f" {o}" in c["instruction"])
            other = sentence.rstrip(".").split()[-1]
            assert other in OBJECTS and other != obj
        if family == "comparison":  # the question's answer is a name: the sentence brings no third owner
            assert solve(family, c["instruction"]) == d["answer"]


def test_every_family_kind_and_position_appears(bench):
    seen = {(d["meta"]["family"], d["meta"]["kind"], d["meta"]["position"])
            for f in DISTRACTOR_FAMILIES for d in rows(bench / f"{f}.distracted.jsonl")}
    assert seen == {(f, k, p) for f in DISTRACTOR_FAMILIES for k in DISTRACTOR_KINDS for p in DISTRACTOR_POSITIONS
                    if (f, p) != ("add", "middle")}  # one sentence before the question: no middle
    for f in DISTRACTOR_FAMILIES:  # positions mean what they say
        for d in rows(bench / f"{f}.distracted.jsonl"):
            (start, end), = d["meta"]["confounder_spans"]
            rest = d["instruction"][end + 1:]
            if d["meta"]["position"] == "start":
                assert start == 0
            elif d["meta"]["position"] == "before-question":
                assert rest.endswith("?") and rest.count(".") == 0
            else:
                assert start > 0 and rest.count(".") >= 1


def test_seeds_reproduce_and_differ(tmp_path, bench):
    distractors(out=tmp_path / "again", n=N, seed=3)
    distractors(out=tmp_path / "other", n=N, seed=4)
    for path in sorted(bench.glob("*.jsonl")):
        assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes()
        assert (tmp_path / "other" / path.name).read_bytes() != path.read_bytes()


def test_files_pass_leafs_readers(bench):
    for family in DISTRACTOR_FAMILIES:
        clean = load_samples(bench / f"{family}.clean.jsonl")
        distracted = load_samples(bench / f"{family}.distracted.jsonl")
        cf = read_counterfactuals(bench / f"{family}.counterfactual.jsonl")
        assert len(clean) == len(distracted) == len(cf) == N and len({s.id for s in clean + distracted}) == 2 * N
        assert [r.intervention for r in cf] == ["delete"] * N and all(r.level == "instruction" for r in cf)
        # leaf analyze reads the known spans from the distracted samples and from the counterfactuals alike
        kind, from_samples = load_span_samples(bench / f"{family}.distracted.jsonl")
        kind_cf, from_cf = load_span_samples(bench / f"{family}.counterfactual.jsonl")
        assert (kind, kind_cf) == ("samples", "counterfactuals")
        assert [(s.instruction, s.spans) for s in from_samples] == [
            (d.instruction, [tuple(d.meta["confounder_spans"][0])]) for d in distracted]
        # the counterfactual's cut includes the space after the sentence
        assert [(s.instruction, s.spans) for s in from_cf] == [(s.instruction, [(a, b + 1)]) for s, (a, b) in
                                                               ((s, s.spans[0]) for s in from_samples)]


def test_cli_subsets_and_bad_options(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["distractors", "--out", str(out), "--n", "4", "--families", "lookup", "--kinds", "number",
                 "--positions", "start"]) == 0
    assert "wrote 5 files" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.jsonl")) == [
        "clean.jsonl", "distracted.jsonl", "lookup.clean.jsonl", "lookup.counterfactual.jsonl",
        "lookup.distracted.jsonl"]
    for split in ("clean", "distracted"):
        assert (out / f"{split}.jsonl").read_bytes() == (out / f"lookup.{split}.jsonl").read_bytes()
    two = tmp_path / "two"
    distractors(out=two, n=3, families=["two-step", "add"], seed=5)
    for split in ("clean", "distracted"):  # every family in one file, in the order asked for
        assert (two / f"{split}.jsonl").read_text() == "".join(
            (two / f"{f}.{split}.jsonl").read_text() for f in ("two-step", "add"))
    recs = rows(out / "lookup.distracted.jsonl")
    assert {r["meta"]["kind"] for r in recs} == {"number"} and {r["meta"]["confounder_spans"][0][0] for r in recs} == {0}
    with pytest.raises(ConfigError, match="families"):
        distractors(out=out, families=["long-division"])
    with pytest.raises(ConfigError, match="no middle"):
        distractors(out=out, families=["add"], positions=["middle"])
    with pytest.raises(ConfigError, match="'n'"):
        distractors(out=out, n=0)
