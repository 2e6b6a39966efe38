"""``leaf cache-teacher``: store the teacher's top-k log-probs of every response token, once.

``leaf distill --teacher-cache DIR`` then trains without loading the teacher.
Resumable: rerun the same command after a crash.
"""

from __future__ import annotations

import argparse

from leaf.config import add_config_arguments, resolve

COMMAND = "cache-teacher"
HELP = "cache the teacher's top-k log-probs of every loss token (train later with leaf distill --teacher-cache)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from leaf.distill.config import CacheConfig

    add_config_arguments(parser, CacheConfig)


def run(args: argparse.Namespace) -> int:
    from leaf.distill.cache import CacheConfig, build_cache

    out = build_cache(resolve(CacheConfig, args))
    print(f"wrote {out}")
    return 0
