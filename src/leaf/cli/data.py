"""``leaf data``: data utilities; ``leaf data convert`` maps a corpus onto leaf's sample JSONL."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from leaf.config import option

COMMAND = "data"
HELP = "data utilities: convert a corpus (NuminaMath-CoT, AceCode-87K, HotpotQA, any with --field) to sample JSONL"


@dataclass
class ConvertConfig:
    """Options of ``leaf data convert``."""

    dataset: str = option(
        help="numinamath-cot, acecode-87k, hotpotqa or any hub id; NAME=PATH for a local copy; or a local PATH"
    )
    to: Path = option(help="output sample JSONL")
    field: str | None = option(
        None,
        help="column mapping, e.g. instruction=problem,response=solution,answer=final "
        "(targets: id, instruction, response, answer)",
    )
    split: str | None = option(None, help="split to read (default: the corpus's training split)")
    subset: str | None = option(None, help="dataset configuration name on the Hub")
    limit: int | None = option(None, help="convert only the first N records")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from leaf.config import add_config_arguments

    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    p = sub.add_parser("convert", help="map a dataset onto the sample JSONL format", description=ConvertConfig.__doc__)
    add_config_arguments(p, ConvertConfig)


def run(args: argparse.Namespace) -> int:
    from leaf.config import resolve
    from leaf.data.convert import convert

    if getattr(args, "data_command", None) != "convert":
        print("usage: leaf data convert --dataset NAME|PATH --to OUT.jsonl [--field ...]")
        return 2
    cfg = resolve(ConvertConfig, args)
    report = convert(cfg.dataset, cfg.to, fields=cfg.field, split=cfg.split, subset=cfg.subset, limit=cfg.limit)
    skipped = sum(report["skipped"].values())
    kind = f" as {report['corpus']}" if report["corpus"] else ""
    print(
        f"wrote {report['written']} samples{kind} to {cfg.to}"
        + (f" (skipped {skipped}: {report['skipped']})" if skipped else "")
    )
    return 0
