"""The ``leaf`` command: a thin layer over the Python API.

Each subcommand lives in its own module of this package and declares one
:class:`Command`: its name, one line of help, its config dataclass and the API
function that runs it (both as ``"module:name"``, imported only when needed so
``leaf --help`` stays fast). Every command is built the same way:

* the flags come from the config dataclass (:func:`leaf.config.add_config_arguments`),
  with ``--config FILE.yaml`` for the same keys; fields without a default are
  required flags unless ``--config`` is given;
* ``run`` resolves defaults < YAML < flags into the config, calls the API
  function, and prints the typed summary it returns (``summary.line()``).

Modules are discovered, so adding a stage never edits this file. Errors that
are the user's to fix (bad data, bad options, settings that changed) are
printed as one line naming the file, line, field or setting, exit status 2;
``--debug`` shows the traceback instead. Ctrl-C prints one line (what was
written stays; the same command resumes) and exits with status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from leaf.config import ConfigError, add_config_arguments, resolve
from leaf.data.jsonl import SettingsMismatch
from leaf.data.records import DataError
from leaf.data.render import TemplateError

#: Errors that are the user's to fix: printed as one clear message, exit status 2. OSError covers what
#: the file system says about the paths given (missing, a folder, no permission, no space).
USER_ERRORS = (DataError, ConfigError, SettingsMismatch, TemplateError, OSError)


def load_object(path: str) -> Any:
    """``"package.module:name"`` -> the object."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Command:
    """One ``leaf`` subcommand: a config dataclass and the API function it is passed to."""

    name: str
    help: str
    config: str = ""  #: "module:ConfigClass"
    run: str = ""  #: "module:function", called with the config; returns a summary with ``.line()``
    children: tuple[Command, ...] = field(default_factory=tuple)  #: sub-actions (``leaf data convert``)

    def add_to(self, sub: Any, require: bool, argv: Sequence[str]) -> None:
        """Add this command; its options (and the imports they need) only when ``argv`` names it."""
        parser = sub.add_parser(self.name, help=self.help, description=self.help)
        if self.name not in argv:  # `leaf --help` and other commands: the name and help are enough
            return
        if self.children:
            actions = parser.add_subparsers(dest=f"{self.name}_action", metavar="ACTION", required=True)
            for child in self.children:
                child.add_to(actions, require, argv)
            return
        add_config_arguments(parser, load_object(self.config), require=require)
        parser.set_defaults(_command=self)

    def __call__(self, args: argparse.Namespace) -> int:
        config = resolve(load_object(self.config), args)
        with _output_lock(getattr(config, "out", None) if self.name in LOCKED else None):
            summary = load_object(self.run)(config)
        print(summary.line())
        return 0


#: Commands that write one output for a whole run: a second writer on the same ``--out`` is refused.
LOCKED = ("detect", "label", "evaluate", "prune", "cache-teacher", "distill", "analyze")


@contextlib.contextmanager
def _output_lock(out: Any) -> Iterator[None]:
    """An exclusive advisory lock on ``OUT.lock`` for the whole run (removed after); a held lock is a ConfigError."""
    if out is None or os.environ.get("RANK", "0") != "0":  # a distributed run: rank 0 holds it for all ranks
        yield
        return
    import fcntl

    path = Path(out).resolve()
    lock = path.with_name(path.name + ".lock")
    made = [d for d in lock.parents if not d.exists()]  # folders this lock creates, deepest first
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(f"--out {out} is being written by pid {holder} (lock {lock}); wait for it to finish") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
            for folder in made:  # a run that failed before writing leaves no empty folder behind
                with contextlib.suppress(OSError):
                    folder.rmdir()


def _commands() -> list[Command]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod: ModuleType = importlib.import_module(f"{__name__}.{info.name}")
        if isinstance(getattr(mod, "COMMAND", None), Command):
            found.append(mod.COMMAND)
    return sorted(found, key=lambda c: c.name)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``leaf`` parser; required options are required flags unless ``--config`` is in ``argv``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    require = not any(a == "--config" or a.startswith("--config=") for a in argv)
    parser = argparse.ArgumentParser(
        prog="leaf",
        description="LeaF: learn to focus. Detect confounding tokens, prune them, distil, evaluate, analyse.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more output: library progress bars and info lines (-vv: debug)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in _commands():
        command.add_to(sub, require, argv)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),  # quiet by default: warnings; -v info; -vv debug
        format="%(levelname)s %(name)s: %(message)s",
    )
    command = getattr(args, "_command", None)
    if command is None:
        parser.print_help()
        return 2
    os.environ["LEAF_VERBOSE"] = str(args.verbose)  # read by code that would print (the Trainer's log lines)
    if not args.verbose:
        _quiet_libraries()
    name = " ".join(v for k, v in vars(args).items() if k == "command" or k.endswith("_action"))
    try:
        code = command(args)
        from leaf.distributed import finish

        finish()  # a launched run leaves its process group before the interpreter exits
        return code
    except KeyboardInterrupt:
        if args.debug:
            raise
        # outputs are written whole batches at a time, so what was written stays and a rerun skips it
        _end_progress_bars()
        _say_error(f"leaf {name}: interrupted; rerun the same command to resume")
        return 130
    except USER_ERRORS as exc:
        if args.debug:
            raise
        message = os_message(exc, vars(args)) if isinstance(exc, OSError) else str(exc)
        _end_progress_bars()
        _say_error(f"leaf {name}: error: {message}")
        return 2


def _say_error(line: str) -> None:
    """One line on stderr in one write: under a launcher (unbuffered output) ``print`` writes the text and its
    newline separately, and the lines of several processes stopping at once then run into each other."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _end_progress_bars() -> None:
    """Close the progress bars a failed command left open, so its one line starts a line of its own."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def os_message(exc: OSError, options: dict[str, Any]) -> str:
    """What the file system said, naming the option whose path it concerns (the path itself, a folder above
    it, or a file written beside it such as a sidecar or a temporary file)."""
    text = " ".join(str(exc).split("\n", 1)[0].split())
    if exc.filename is None or exc.strerror is None:
        return text
    failed = Path(str(exc.filename))
    for name, value in options.items():
        if not isinstance(value, (str, Path)) or name.startswith("_") or not str(value):
            continue
        given = Path(value)
        if failed == given:
            return f"--{name.replace('_', '-')} {value}: {exc.strerror}"
        if given.is_relative_to(failed) or failed.parent == given.parent and failed.name.startswith(
                (given.name, f".{given.name}")):
            return f"--{name.replace('_', '-')} {value}: {exc.strerror} ({failed})"
    return f"{failed}: {exc.strerror}"


def _quiet_libraries() -> None:
    """Without ``-v``: no per-load "Loading weights" / "Writing model shards" bars or library chatter.

    leaf's own progress bars (one per long step) and warnings stay.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
