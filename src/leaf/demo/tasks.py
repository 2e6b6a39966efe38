"""Synthetic instruction/response tasks whose confounders are known by construction.

Four families of different kinds, each a short problem whose instruction may
carry one *planted* value -- a number that looks like the answer:

* ``arith``  -- a word problem (``a + b`` or ``a - b``) with a distracting number
  phrase ("Ben guesses 9.");
* ``lookup`` -- retrieve a price from a short list, with a planted pair for the
  queried key ("Last week fig was 2.");
* ``code``   -- trace a three-line program (``y = x - 3``; ``print(y)``), with a
  misleading comment ("# prints 4");
* ``distract`` -- a word problem with an irrelevant *sentence* that contains a
  number ("Cal lives at number 9."), in the spirit of the irrelevant-context
  math benchmarks; the whole sentence is the confounder span.

Splits (the bias knob is ``bias`` = probability that the planted value equals
the answer; otherwise it is drawn from plausible wrong values):

* ``clean``          -- no planted text at all;
* ``confounded``     -- planted value = answer with probability 0.95 (default);
* ``counterfactual`` -- bias 0.0: the planted value never equals the answer.

The planted phrase sits at the end of the instruction by default
(``placement="end"``: after the question, or as a comment on the ``print``
line), where a shortcut reads it most cheaply; ``placement="any"`` scatters it
over several places (see docs/demo.md for what that does to the students).

Every split with the same ``seed`` draws the *same* problems (problem ``i`` of
``clean`` and of ``counterfactual`` differ only in the planted text), so split
differences measure the planted text and nothing else. Use different seeds for
training and test sets.

Records follow the sample format (``id``, ``instruction``, ``response``,
``answer``, ``meta``); ``meta.confounder_spans`` lists ``[start, end)``
character spans of the instruction covering exactly the planted value (the
digits, not the sentence around them; for ``distract``, the whole irrelevant
sentence); empty for ``clean``. Responses take two
or three reasoning steps and end with ``The answer is X.``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAMILIES = ("arith", "lookup", "code", "distract")
SPLITS = ("clean", "confounded", "counterfactual")
DEFAULT_BIAS = {"clean": None, "confounded": 0.95, "counterfactual": 0.0}
PLACEMENTS = ("end", "any")
#: Seed of the held-out test problems (training sets use other seeds: leaf.demo.models.TRAIN_SEED).
TEST_SEED = 7
ANSWER_PREFIX = "The answer is "

NAMES = ("Ann", "Ben", "Cal", "Dan", "Eve", "Fay", "Gus", "Ivy")
OBJECTS = ("apples", "pens", "cards", "coins", "books", "shells")
FRUITS = ("apple", "pear", "plum", "fig", "lime", "kiwi", "date", "melon")


@dataclass(frozen=True)
class Problem:
    """One drawn problem, before the planted value is chosen.

    ``build(planted, rng, placement)`` returns ``(instruction, spans)`` for a
    planted value (``None`` = clean); ``wrong`` are the plausible wrong values
    to plant.
    """

    answer: str
    response: str
    wrong: tuple[str, ...]
    build: Callable[[str | None, random.Random, str], tuple[str, list[list[int]]]]
    info: dict[str, Any]


class _Instruction:
    """Concatenate pieces of text, remembering where the planted pieces land."""

    def __init__(self) -> None:
        self.text = ""
        self.spans: list[list[int]] = []

    def add(self, piece: str, *, planted: bool = False) -> _Instruction:
        if planted:
            self.spans.append([len(self.text), len(self.text) + len(piece)])
        self.text += piece
        return self

    def result(self) -> tuple[str, list[list[int]]]:
        return self.text, self.spans


def _operands(rng: random.Random) -> tuple[int, str, int, int]:
    """``a op b = result`` with single-digit operands and a non-negative result."""
    if rng.random() < 0.5:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        return a, "+", b, a + b
    a = rng.randint(2, 9)
    b = rng.randint(1, a - 1)
    return a, "-", b, a - b


def _near_misses(result: int) -> tuple[str, ...]:
    """Plausible wrong answers: within 3 of ``result``, never negative."""
    return tuple(str(v) for v in range(max(0, result - 3), result + 4) if v != result)


# -- arith ------------------------------------------------------------------------------------

_ARITH_HINTS = ("{n} guesses {h}.", "A note says {h}.", "The tag shows {h}.")


def _arith(rng: random.Random) -> Problem:
    name, friend = rng.sample(NAMES, 2)
    obj = rng.choice(OBJECTS)
    a, op, b, result = _operands(rng)
    change = f"{name} buys {b} more" if op == "+" else f"{name} gives away {b}"
    facts = [f"{name} has {a} {obj}.", f"{change}."]
    question = f"How many {obj} does {name} have now?"
    response = f"{name} starts with {a} {obj}. {change}, so {a} {op} {b} = {result}. {ANSWER_PREFIX}{result}."
    wrong = _near_misses(result)

    def build(planted: str | None, r: random.Random, placement: str) -> tuple[str, list[list[int]]]:
        sentences: list[str | None] = [*facts, question]
        if planted is not None:
            head, tail = r.choice(_ARITH_HINTS).format(n=friend, h="\0").split("\0")
            # end: after the question; any: before any sentence or after the question
            sentences.insert(3 if placement == "end" else r.randint(0, 3), None)
        out = _Instruction()
        for i, sentence in enumerate(sentences):
            sep = " " if i else ""
            if sentence is None:
                out.add(sep + head).add(str(planted), planted=True).add(tail)
            else:
                out.add(sep + sentence)
        return out.result()

    return Problem(str(result), response, wrong, build, {"a": a, "b": b, "op": op})


# -- lookup -----------------------------------------------------------------------------------

_LOOKUP_HINTS = ("Last week {k} was {h}.", "A sign says {k} is {h}.", "Ben thinks {k} costs {h}.")


def _lookup(rng: random.Random) -> Problem:
    keys = rng.sample(FRUITS, 3)
    values = rng.sample(range(1, 10), 3)
    q = rng.randrange(3)
    key, value = keys[q], values[q]
    listing = "Prices: " + ", ".join(f"{k} {v}" for k, v in zip(keys, values)) + "."
    question = f"How much is {key}?"
    response = f"We look up {key}. The list has {key} {value}. {ANSWER_PREFIX}{value}."
    # The most plausible wrong values: the prices of the other fruits in the list.
    wrong = tuple(str(v) for v in values if v != value)

    def build(planted: str | None, r: random.Random, placement: str) -> tuple[str, list[list[int]]]:
        out = _Instruction()
        if planted is None:
            return out.add(f"{listing} {question}").result()
        head, tail = r.choice(_LOOKUP_HINTS).format(k=key, h="\0").split("\0")
        # end: after the question; any: before the list, between list and question, or at the end
        where = 2 if placement == "end" else r.randrange(3)
        pieces = [listing, question]
        pieces.insert(where, "\0")
        for i, piece in enumerate(pieces):
            sep = " " if i else ""
            if piece == "\0":
                out.add(sep + head).add(planted, planted=True).add(tail)
            else:
                out.add(sep + piece)
        return out.result()

    return Problem(str(value), response, wrong, build, {"keys": keys, "values": values, "query": key})


# -- code -------------------------------------------------------------------------------------

_CODE_COMMENTS = ("# prints {h}", "# expect {h}", "# -> {h}")
_CODE_VARS = (("x", "y"), ("a", "b"), ("n", "m"), ("p", "q"))


def _code(rng: random.Random) -> Problem:
    u, v = rng.choice(_CODE_VARS)
    a, op, b, result = _operands(rng)
    lines = [f"{u} = {a}", f"{v} = {u} {op} {b}", f"print({v})"]
    response = f"{u} is {a}. {v} = {a} {op} {b} = {result}. {ANSWER_PREFIX}{result}."
    wrong = _near_misses(result)

    def build(planted: str | None, r: random.Random, placement: str) -> tuple[str, list[list[int]]]:
        out = _Instruction().add("What does this code print?\n")
        if planted is None:
            return out.add("\n".join(lines)).result()
        head, tail = r.choice(_CODE_COMMENTS).format(h="\0").split("\0")
        # end: after the print; any: after the assignment, on its own line, or after the print
        where = 2 if placement == "end" else r.randrange(3)
        body = lines[:]
        if where == 1:
            body.insert(2, "\0")
        else:
            body[1 if where == 0 else 2] += "  \0"
        text = "\n".join(body)
        before, after = text.split("\0")
        return out.add(before + head).add(planted, planted=True).add(tail + after).result()

    return Problem(str(result), response, wrong, build, {"a": a, "b": b, "op": op, "vars": [u, v]})


# -- distract ---------------------------------------------------------------------------------

_DISTRACT_SENTENCES = ("{n} lives at number {h}.", "The bus to school is the {h} line.", "{n} is {h} years old.",
                       "The room has {h} windows.")
_DISTRACT_PLACES = ("park", "shop", "lake", "farm")


def _distract(rng: random.Random) -> Problem:
    """A word problem with an irrelevant sentence holding a number: the whole sentence is the span."""
    name, friend = rng.sample(NAMES, 2)
    obj, place = rng.choice(OBJECTS), rng.choice(_DISTRACT_PLACES)
    a, op, b, result = _operands(rng)
    change = f"finds {b} more at the {place}" if op == "+" else f"loses {b} at the {place}"
    facts = [f"{name} has {a} {obj}.", f"{name} {change}."]
    question = f"How many {obj} does {name} have?"
    response = f"{name} has {a} {obj}. {name} {change}, so {a} {op} {b} = {result}. {ANSWER_PREFIX}{result}."
    wrong = _near_misses(result)

    def build(planted: str | None, r: random.Random, placement: str) -> tuple[str, list[list[int]]]:
        out = _Instruction()
        sentences: list[str | None] = [*facts, question]
        if planted is not None:
            distractor = r.choice(_DISTRACT_SENTENCES).format(n=friend, h=planted)
            # end: between the facts and the question (irrelevant context); any: before any sentence or at the end
            sentences.insert(2 if placement == "end" else r.randint(0, 3), None)
        for i, sentence in enumerate(sentences):
            sep = " " if i else ""
            if sentence is None:
                out.add(sep).add(distractor, planted=True)
            else:
                out.add(sep + sentence)
        return out.result()

    return Problem(str(result), response, wrong, build, {"a": a, "b": b, "op": op})


PROBLEMS: dict[str, Callable[[random.Random], Problem]] = {
    "arith": _arith, "lookup": _lookup, "code": _code, "distract": _distract,
}


# -- generation -------------------------------------------------------------------------------


def _plant(rng: random.Random, problem: Problem, bias: float) -> str:
    if rng.random() < bias:
        return problem.answer
    return rng.choice(problem.wrong)


def generate(
    family: str,
    split: str,
    n: int,
    *,
    seed: int = 0,
    bias: float | None = None,
    start: int = 0,
    placement: str = "end",
) -> list[dict[str, Any]]:
    """``n`` records of one family and split (problems ``start .. start+n-1`` of ``seed``).

    ``bias`` overrides the split's default probability that the planted value
    equals the answer (ignored for ``clean``). ``placement`` puts the planted
    phrase at the end of the instruction (``end``, the default) or at a random
    one of several places (``any``).
    """
    if family not in PROBLEMS:
        raise ValueError(f"unknown task family {family!r}; use one of {', '.join(FAMILIES)}")
    if split not in DEFAULT_BIAS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if split == "clean":
        bias = None
    elif bias is None:
        bias = DEFAULT_BIAS[split]
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; use one of {', '.join(PLACEMENTS)}")
    if bias is not None and not 0.0 <= bias <= 1.0:
        raise ValueError(f"bias must lie in [0, 1], got {bias}")
    records = []
    for i in range(start, start + n):
        # Problem and surface depend on (seed, family, i) only: every split shares them.
        problem = PROBLEMS[family](random.Random(f"{seed}/{family}/{i}"))
        plant_rng = random.Random(f"{seed}/{family}/{i}/{split}/{bias}/{placement}")
        planted = None if bias is None else _plant(plant_rng, problem, bias)
        instruction, spans = problem.build(planted, plant_rng, placement)
        meta: dict[str, Any] = {
            "family": family,
            "split": split,
            "bias": bias,
            "placement": None if bias is None else placement,
            "confounder_spans": spans,
            "planted": planted,
            "planted_is_answer": None if planted is None else planted == problem.answer,
            "problem": problem.info,
        }
        records.append(
            {
                "id": f"{family}-{split}-s{seed}-{i}",
                "instruction": instruction,
                "response": problem.response,
                "answer": problem.answer,
                "meta": meta,
            }
        )
    return records


def generate_mix(
    families: Iterable[str],
    split: str,
    n_per_family: int,
    *,
    seed: int = 0,
    bias: float | None = None,
    start: int = 0,
    placement: str = "end",
) -> list[dict[str, Any]]:
    """Records of several families, interleaved (family order repeats), same split."""
    per = [
        generate(f, split, n_per_family, seed=seed, bias=bias, start=start, placement=placement) for f in families
    ]
    return [rec for group in zip(*per) for rec in group]


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write records as JSON Lines (the sample format every leaf stage reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def held_out_sets(families: Iterable[str], n: int, *, seed: int = TEST_SEED) -> dict[str, list[dict[str, Any]]]:
    """Held-out test sets named ``<family>/<split>``; the same ``n`` problems in every split."""
    return {f"{f}/{split}": generate(f, split, n, seed=seed) for f in families for split in SPLITS}


def final_answer(text: str) -> str | None:
    """The ``X`` of the last ``The answer is X.`` in ``text`` (``None`` if absent)."""
    at = text.rfind(ANSWER_PREFIX)
    if at < 0:
        return None
    rest = text[at + len(ANSWER_PREFIX) :].strip()
    rest = rest.split()[0] if rest else ""
    return rest.rstrip(".") or None
