"""The ``leaf`` command: a thin layer over the Python API.

Each subcommand lives in its own module of this package and exposes

* ``COMMAND`` (its name on the command line, e.g. ``"detect"``),
* ``HELP`` (one line),
* ``add_arguments(parser)`` and ``run(args) -> int``.

Modules are discovered, so adding a stage never edits this file. Heavy imports
(torch, transformers) happen inside ``run`` so ``leaf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from leaf.config import ConfigError
from leaf.data.jsonl import SettingsMismatch
from leaf.data.records import DataError
from leaf.data.render import TemplateError

#: Errors that are the user's to fix: printed as one clear message, exit status 2.
USER_ERRORS = (DataError, ConfigError, SettingsMismatch, TemplateError)


def _commands() -> list[ModuleType]:
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "COMMAND"):
            mods.append(mod)
    return sorted(mods, key=lambda m: m.COMMAND)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leaf",
        description="LeaF: learn to focus. Detect confounding tokens, prune them, distil, evaluate, analyse.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _commands():
        p = sub.add_parser(mod.COMMAND, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose + 1, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except USER_ERRORS as exc:
        print(f"leaf {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
