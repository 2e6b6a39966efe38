"""Answer checkers behind one interface, keyed by task.

``get_checker(task)`` returns an object with ``.name`` and
``.check(prediction: str, sample: leaf.data.records.Sample) -> bool``:

* ``math`` -- final answer (``\\boxed{}``, ``####``, "the answer is") judged by math-verify;
* ``code`` -- the program passes the sample's tests in a sandboxed process
  (tests in ``sample.meta["tests"]``, entry point in ``sample.meta["entry_point"]``);
* ``qa`` -- HotpotQA-normalised exact match (``.f1`` gives token F1);
* ``exact`` -- normalised exact match (synthetic tasks).
"""

from __future__ import annotations

from typing import Any, Protocol

from leaf.config import MissingExtra

__all__ = ["CODE_SANDBOXES", "CODE_SANDBOX_HELP", "TASKS", "Checker", "MissingExtra", "check_code_sandbox", "checker_for", "get_checker"]


class Checker(Protocol):
    name: str

    def check(self, prediction: str, sample: Any) -> bool: ...


TASKS = ("math", "code", "qa", "exact")
CODE_SANDBOXES = ("bwrap", "none")  # how code candidates are fenced in (see leaf.checkers._bwrap)
CODE_SANDBOX_HELP = (
    "code task: run candidates under bubblewrap with nothing but the standard library and a private /tmp (bwrap), "
    "or only with the audit hook and resource limits where the container is the boundary (none)"
)


def check_answer_pattern(task: str | None, pattern: str | None) -> None:
    """Refuse (ValueError) an answer pattern that does not compile, has not one group, or is for another task."""
    if pattern is None:
        return
    if task not in (None, "exact"):
        raise ValueError(f"--answer-pattern applies to --task exact, not {task}")
    from leaf.checkers.exact import answer_pattern

    answer_pattern(pattern)


def check_code_sandbox(task: str | None, sandbox: str) -> None:
    """Refuse (one line, a ``ConfigError``) code checking under ``bwrap`` where bubblewrap cannot run;
    called before any model is loaded. ``none`` trusts the container to be the boundary."""
    from leaf.checkers import _bwrap

    _bwrap.check_mode(sandbox)
    if task == "code" and sandbox == "bwrap":
        _bwrap.require()


def checker_for(
    task: str, *, code_timeout: float = 10.0, answer_pattern: str | None = None, code_sandbox: str = "bwrap"
) -> Checker:
    """The checker a stage config asks for (``task``, ``code_timeout``, ``answer_pattern``, ``code_sandbox``),
    the one way evaluate, label and prune --verify build it."""
    if answer_pattern is not None and task != "exact":
        raise ValueError(f"--answer-pattern applies to --task exact, not {task}")
    if task == "code":
        return get_checker(task, timeout=code_timeout, sandbox=code_sandbox)
    if task == "exact":
        return get_checker(task, pattern=answer_pattern)
    return get_checker(task)


def get_checker(task: str, **options: Any) -> Checker:
    """The checker for ``task`` (one of :data:`TASKS`); ``options`` go to its constructor."""
    if task == "math":
        from leaf.checkers.math import MathChecker

        return MathChecker(**options)
    if task == "code":
        from leaf.checkers.code import CodeChecker

        return CodeChecker(**options)
    if task == "qa":
        from leaf.checkers.qa import QAChecker

        return QAChecker(**options)
    if task == "exact":
        from leaf.checkers.exact import ExactChecker

        return ExactChecker(**options)
    raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
