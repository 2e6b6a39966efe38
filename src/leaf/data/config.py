"""Options of ``leaf data convert``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from leaf.config import option


@dataclass
class ConvertConfig:
    """Options of ``leaf data convert``."""

    dataset: str = option(role="input",
        help="numinamath-cot, acecode-87k, hotpotqa or any hub id; NAME=PATH for a local copy; or a local PATH"
    )
    out: Path = option(role="output", help="output sample JSONL", aliases=["to"])
    field: str | None = option(
        None,
        help="column mapping, e.g. instruction=problem,response=solution,answer=final "
        "(targets: id, instruction, response, answer)",
    )
    split: str | None = option(None, help="split to read (default: the corpus's training split)")
    subset: str | None = option(None, help="dataset configuration name on the Hub")
    limit: int | None = option(None, help="convert only the first N records", low=1)


#: Problem families and irrelevant-sentence kinds of ``leaf distractors`` (leaf.data.distractors).
DISTRACTOR_FAMILIES = ("add", "one-step", "two-step", "comparison", "lookup", "multi-hop")
DISTRACTOR_KINDS = ("number", "name", "related")
DISTRACTOR_POSITIONS = ("start", "middle", "before-question")


@dataclass
class DistractorsConfig:
    """Options of ``leaf distractors``."""

    out: Path = option(role="output", help="output folder: one JSONL per family and split (FAMILY.SPLIT.jsonl)")
    n: int = option(30, low=1, help="problems per family (each split holds one record per problem)")
    seed: int = option(0, help="random seed: the same seed writes the same files")
    families: list[str] = option(default_factory=lambda: list(DISTRACTOR_FAMILIES), choices=DISTRACTOR_FAMILIES,
                                 help="problem families to write")
    kinds: list[str] = option(default_factory=lambda: list(DISTRACTOR_KINDS), choices=DISTRACTOR_KINDS,
                              help="kinds of irrelevant sentence, taken in turn over the problems of a family")
    positions: list[str] = option(default_factory=lambda: list(DISTRACTOR_POSITIONS), choices=DISTRACTOR_POSITIONS,
                                  help="where the irrelevant sentence goes, taken in turn (after the kinds)")
