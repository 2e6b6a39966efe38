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
