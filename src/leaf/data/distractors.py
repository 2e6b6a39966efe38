"""A distractor benchmark for small real models, in the spirit of GSM-IC (``leaf distractors``).

Problem families (each a short problem a small instruct model can attempt):

* ``add``        -- ``Tom has 2 cookies and buys 3 more. How many cookies does Tom have?`` (one sentence);
* ``one-step``   -- ``Tom has 2 cookies. Tom buys 3 more. How many cookies does Tom have now?`` (add or take away);
* ``two-step``   -- buys some, then gives some away;
* ``comparison`` -- two people's counts, ``Who has more cookies?`` (the answer is a name);
* ``lookup``     -- three people's counts, one is asked for;
* ``multi-hop``  -- each person's box has a colour and each colour a count: two hops from a name to the answer.

Kinds of irrelevant sentence (none changes the answer):

* ``number``  -- a number about something else (``Tom's cousin is 33 years old.``);
* ``name``    -- a new person, no number (``Nia waved from across the street.``);
* ``related`` -- a related-sounding quantity of another object (``Tom's sister has 5 pencils.``).

The sentence goes at the ``start``, in the ``middle`` of the context or just
``before-question`` (``add`` has one sentence before its question, so no
``middle``: its problems take the other positions in turn). Its number is never the answer nor any number of the
problem; its name is never a name of the problem; its object is never the
problem's object.

Splits, one file each per family (``FAMILY.SPLIT.jsonl``), problem ``i`` the
same in all three:

* ``clean``          -- the problem alone (``meta.confounder_spans`` is ``[]``);
* ``distracted``     -- the problem with one irrelevant sentence; ``meta.confounder_spans`` is
  ``[[start, end]]``, exactly that sentence (its first letter to its full stop) in ``instruction``;
* ``counterfactual`` -- what ``leaf prune`` (``--intervention delete``, ``--strategy span``) writes for
  the distracted record when the detection flags exactly the sentence: a counterfactual record
  (``leaf.data.counterfactuals``) whose ``removed`` is the sentence and the space after it, whose
  instruction is the clean problem character for character.

Kinds and positions are taken in turn (problem ``i`` gets kind ``i mod K`` and
position ``(i div K) mod P``), so every kind and position appears once ``n``
reaches ``K * P``. Everything is drawn from ``random.Random`` seeded by
``(seed, family, i)``: the same seed writes the same files.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leaf.config import ConfigError, Summary, make
from leaf.data.config import DISTRACTOR_FAMILIES, DISTRACTOR_KINDS, DISTRACTOR_POSITIONS, DistractorsConfig
from leaf.data.counterfactuals import Counterfactual, Removed, write_counterfactuals
from leaf.data.jsonl import dumps, write_atomic

SPLITS = ("clean", "distracted", "counterfactual")
#: The sample splits (the third, counterfactual, is written as counterfactual records).
SAMPLE_SPLITS = ("clean", "distracted")


def split_file(split: str) -> str:
    """The file holding a sample split of every family (``clean.jsonl``, ``distracted.jsonl``)."""
    return f"{split}.jsonl"


NAMES = ("Tom", "Ann", "Ben", "Eve", "Sam", "Mia", "Leo", "Zoe", "Max", "Ivy", "Dan", "Amy")
#: Names only the ``name`` distractor uses (never a problem's name).
OTHER_NAMES = ("Nia", "Raj", "Kai", "Uma", "Oscar", "Priya")
OBJECTS = ("cookies", "apples", "pencils", "marbles", "stickers", "books", "coins", "shells")
COLOURS = ("red", "blue", "green", "yellow")
RELATIVES = ("sister", "brother", "friend", "neighbour", "cousin")
NUMBER_SENTENCES = (
    "{owner}'s cousin is {k} years old.",
    "{owner}'s house is number {k} on the street.",
    "The school bus has {k} seats.",
    "{owner} walked {k} minutes to the park.",
)
NAME_SENTENCES = (
    "{other} waved from across the street.",
    "{other} is {owner}'s neighbour.",
    "{other} likes to read on Sundays.",
)
RELATED_SENTENCE = "{owner}'s {relative} has {k} {thing}."


@dataclass(frozen=True)
class Problem:
    """One drawn problem: its sentences (the last is the question), answer and reference response."""

    context: list[str]
    question: str
    answer: str
    response: str
    names: tuple[str, ...]  #: the names the problem uses
    obj: str  #: the object it counts
    numbers: tuple[int, ...]  #: every number in the problem
    info: dict[str, Any]


def _one_step(rng: random.Random) -> Problem:
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    a = rng.randint(2, 15)
    if rng.random() < 0.5:
        b = rng.randint(1, 12)
        ans, verb, op = a + b, f"{name} buys {b} more.", "+"
    else:
        b = rng.randint(1, a - 1)
        ans, verb, op = a - b, f"{name} gives {b} {obj} away.", "-"
    return Problem([f"{name} has {a} {obj}.", verb], f"How many {obj} does {name} have now?", str(ans),
                   f"{name} has {a} {obj}, so {a} {op} {b} = {ans}.\n#### {ans}", (name,), obj, (a, b),
                   {"a": a, "b": b, "op": op})


def _add(rng: random.Random) -> Problem:
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    a, b = rng.randint(2, 15), rng.randint(2, 12)
    return Problem([f"{name} has {a} {obj} and buys {b} more."], f"How many {obj} does {name} have?", str(a + b),
                   f"{name} has {a} + {b} = {a + b} {obj}.\n#### {a + b}", (name,), obj, (a, b), {"a": a, "b": b})


def _two_step(rng: random.Random) -> Problem:
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    c = rng.randint(1, a + b - 1)
    ans = a + b - c
    return Problem([f"{name} has {a} {obj}.", f"{name} buys {b} more.", f"Then {name} gives {c} {obj} away."],
                   f"How many {obj} does {name} have now?", str(ans),
                   f"{name} has {a} + {b} = {a + b} {obj}, then {a + b} - {c} = {ans}.\n#### {ans}",
                   (name,), obj, (a, b, c), {"a": a, "b": b, "c": c})


def _comparison(rng: random.Random) -> Problem:
    first, second = rng.sample(NAMES, 2)
    obj = rng.choice(OBJECTS)
    a, b = rng.sample(range(2, 20), 2)
    more = first if a > b else second
    return Problem([f"{first} has {a} {obj}.", f"{second} has {b} {obj}."], f"Who has more {obj}?", more,
                   f"{first} has {a} and {second} has {b}; {max(a, b)} > {min(a, b)}, so {more} has more.\n"
                   f"#### {more}", (first, second), obj, (a, b), {"a": a, "b": b, "names": [first, second]})


def _lookup(rng: random.Random) -> Problem:
    names = rng.sample(NAMES, 3)
    obj = rng.choice(OBJECTS)
    counts = rng.sample(range(2, 20), 3)
    q = rng.randrange(3)
    return Problem([f"{n} has {c} {obj}." for n, c in zip(names, counts)], f"How many {obj} does {names[q]} have?",
                   str(counts[q]), f"{names[q]} has {counts[q]} {obj}.\n#### {counts[q]}", tuple(names), obj,
                   tuple(counts), {"names": names, "counts": counts, "asked": names[q]})


def _multi_hop(rng: random.Random) -> Problem:
    names = rng.sample(NAMES, 2)
    colours = rng.sample(COLOURS, 2)
    obj = rng.choice(OBJECTS)
    counts = rng.sample(range(2, 20), 2)
    q = rng.randrange(2)
    order = rng.sample(range(2), 2)  # the colour facts in another order than the names
    context = [f"{n}'s box is {c}." for n, c in zip(names, colours)]
    context += [f"The {colours[j]} box holds {counts[j]} {obj}." for j in order]
    return Problem(context, f"How many {obj} are in {names[q]}'s box?", str(counts[q]),
                   f"{names[q]}'s box is {colours[q]}, and the {colours[q]} box holds {counts[q]} {obj}.\n"
                   f"#### {counts[q]}", tuple(names), obj, tuple(counts),
                   {"names": names, "colours": colours, "counts": counts, "asked": names[q]})


FAMILIES: dict[str, Callable[[random.Random], Problem]] = {
    "add": _add, "one-step": _one_step, "two-step": _two_step, "comparison": _comparison, "lookup": _lookup,
    "multi-hop": _multi_hop,
}
assert tuple(FAMILIES) == DISTRACTOR_FAMILIES


def forbidden_numbers(problem: Problem) -> set[int]:
    """Numbers a distractor may not hold: the answer (when a number) and every number of the problem."""
    out = set(problem.numbers)
    if problem.answer.isdigit():
        out.add(int(problem.answer))
    return out


def distractor(problem: Problem, kind: str, rng: random.Random) -> tuple[str, int | None]:
    """``(sentence, its number or None)``: an irrelevant sentence of ``kind`` for ``problem``."""
    owner = rng.choice(problem.names)
    if kind == "name":
        return rng.choice(NAME_SENTENCES).format(other=rng.choice(OTHER_NAMES), owner=owner), None
    k = rng.choice(sorted(set(range(2, 60)) - forbidden_numbers(problem)))
    if kind == "number":
        return rng.choice(NUMBER_SENTENCES).format(owner=owner, k=k), k
    thing = rng.choice([o for o in OBJECTS if o != problem.obj])
    return RELATED_SENTENCE.format(owner=owner, relative=rng.choice(RELATIVES), k=k, thing=thing), k


def possible_positions(problem: Problem, positions: list[str]) -> list[str]:
    """The requested positions the problem has room for (``middle`` needs two context sentences)."""
    found = [p for p in positions if p != "middle" or len(problem.context) >= 2]
    if not found:
        raise ConfigError("--positions middle: a family with one sentence before its question has no middle; "
                          "add start or before-question")
    return found


def insert_at(problem: Problem, position: str, rng: random.Random) -> int:
    """Index of the sentence list (context + question) where the distractor goes."""
    if position == "start":
        return 0
    if position == "before-question":
        return len(problem.context)
    return rng.randint(1, len(problem.context) - 1)  # middle: between two context sentences


def assemble(sentences: list[str], at: int | None = None, extra: str = "") -> tuple[str, list[list[int]]]:
    """Join sentences with one space; with ``at``, ``extra`` goes before sentence ``at``. Returns text and span."""
    if at is None:
        return " ".join(sentences), []
    before = " ".join(sentences[:at])
    start = len(before) + (1 if before else 0)
    text = " ".join([*sentences[:at], extra, *sentences[at:]])
    return text, [[start, start + len(extra)]]


def family_records(family: str, n: int, seed: int, kinds: list[str],
                   positions: list[str]) -> dict[str, list[Any]]:
    """``{split: records}`` of one family (samples as dicts; counterfactuals as records)."""
    out: dict[str, list[Any]] = {split: [] for split in SPLITS}
    for i in range(n):
        rng = random.Random(f"{seed}/{family}/{i}")
        problem = FAMILIES[family](rng)
        problem_positions = possible_positions(problem, positions)
        kind = kinds[i % len(kinds)]
        position = problem_positions[(i // len(kinds)) % len(problem_positions)]
        sentence, number = distractor(problem, kind, rng)
        at = insert_at(problem, position, rng)
        sentences = [*problem.context, problem.question]
        clean, _ = assemble(sentences)
        text, spans = assemble(sentences, at, sentence)
        base = {"family": family, "problem": problem.info}
        cid, did = f"{family}-s{seed}-{i}", f"{family}-s{seed}-{i}-{kind}"
        out["clean"].append({"id": cid, "instruction": clean, "response": problem.response, "answer": problem.answer,
                             "meta": {**base, "split": "clean", "confounder_spans": []}})
        about = {"kind": kind, "position": position, "distractor": sentence, "distractor_number": number,
                 "clean_id": cid}
        out["distracted"].append({"id": did, "instruction": text, "response": problem.response,
                                  "answer": problem.answer,
                                  "meta": {**base, "split": "distracted", **about, "confounder_spans": spans}})
        start, end = spans[0]
        out["counterfactual"].append(Counterfactual(
            id=f"{did}#s0", source_id=did, instruction=clean, response=problem.response,
            removed=[Removed("instruction", start, end + 1, text[start:end + 1])], strategy="span",
            level="instruction", method="oracle", intervention="delete", answer=problem.answer,
            meta={**base, "split": "counterfactual", **about}))
    return out


@dataclass
class DistractorsSummary(Summary):
    out: Path
    files: list[str]
    records: dict[str, int]  #: per split
    kinds: dict[str, int]  #: distracted records per kind

    def line(self) -> str:
        per = ", ".join(f"{n} {s}" for s, n in self.records.items())
        kinds = ", ".join(f"{k} {n}" for k, n in self.kinds.items())
        return f"wrote {len(self.files)} files to {self.out}: {per} records (distractor kinds: {kinds})"


def _lists(cfg: DistractorsConfig) -> tuple[list[str], list[str], list[str]]:
    """The families, kinds and positions these options name (each once, in order; none given: all)."""
    return (list(dict.fromkeys(cfg.families or DISTRACTOR_FAMILIES)), list(dict.fromkeys(cfg.kinds or DISTRACTOR_KINDS)),
            list(dict.fromkeys(cfg.positions or DISTRACTOR_POSITIONS)))


def draw(cfg: DistractorsConfig) -> dict[str, dict[str, list[Any]]]:
    """``{family: {split: records}}`` exactly as ``leaf distractors`` writes them for ``cfg`` (nothing is
    written; pure Python, seeded)."""
    families, kinds, positions = _lists(cfg)
    return {family: family_records(family, cfg.n, cfg.seed, kinds, positions) for family in families}


def distractors(config: DistractorsConfig | None = None, **kwargs: Any) -> DistractorsSummary:
    """``leaf distractors`` as a function: a :class:`DistractorsConfig` or its fields as keyword arguments."""
    cfg = make(DistractorsConfig, config, kwargs, "leaf.data.distractors()")
    families, kinds, positions = _lists(cfg)
    for family in families:  # refuse a position no problem of a family has room for before writing anything
        possible_positions(FAMILIES[family](random.Random(0)), positions)
    files, records, kind_counts = [], Counter[str](), Counter[str]()
    merged: dict[str, list[str]] = {split: [] for split in SAMPLE_SPLITS}
    for family, recs in draw(cfg).items():
        for split in SAMPLE_SPLITS:
            path = cfg.out / f"{family}.{split}.jsonl"
            lines = [dumps(r) + "\n" for r in recs[split]]
            write_atomic(path, "".join(lines))
            merged[split] += lines
            files.append(path.name)
        path = cfg.out / f"{family}.counterfactual.jsonl"
        write_counterfactuals(path, recs["counterfactual"], settings={
            "distractors": {"family": family, "n": cfg.n, "seed": cfg.seed, "kinds": kinds, "positions": positions}})
        files.append(path.name)
        records.update({split: len(recs[split]) for split in SPLITS})
        kind_counts.update(r["meta"]["kind"] for r in recs["distracted"])
    for split, lines in merged.items():  # every family in one file, in the order of --families
        write_atomic(cfg.out / split_file(split), "".join(lines))
        files.append(split_file(split))
    return DistractorsSummary(cfg.out, files, {s: records[s] for s in SPLITS}, {k: kind_counts[k] for k in kinds})


__all__ = ["FAMILIES", "SAMPLE_SPLITS", "SPLITS", "DistractorsSummary", "Problem", "assemble", "distractor", "distractors",
           "draw", "family_records", "forbidden_numbers", "split_file"]
