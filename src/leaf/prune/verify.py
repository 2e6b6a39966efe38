"""Keep a pruning only when teacher and student both still answer correctly (or the teacher alone).

The paper validates each counterfactual by answering the pruned instruction
with both models. :func:`verify_records` takes the two pieces it needs as
plain callables, so the rule is testable on its own and the CLI plugs in real
generation (:func:`leaf.generation.generate`) and a task checker
(:func:`leaf.checkers.get_checker`).

Records whose instruction is unchanged (a response-level pruning that cut only
earlier response text) cannot be checked by answering the instruction; they
keep ``verified: null`` and are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from leaf.data.counterfactuals import Counterfactual
from leaf.data.records import Sample

#: ``answer(role, records) -> predictions`` for role "teacher" / "student"; each record has
#: ``id`` and ``instruction`` (ids let a live answerer resume from generations on disk).
AnswerFn = Callable[[str, Sequence[dict[str, Any]]], Sequence[str]]
#: ``check(prediction, sample) -> correct``.
CheckFn = Callable[[str, Sample], bool]


def verify_records(
    records: list[Counterfactual],
    answer: AnswerFn,
    check: CheckFn,
    roles: Sequence[str] = ("teacher", "student"),
) -> tuple[list[Counterfactual], list[Counterfactual]]:
    """Set ``verified`` on every record; return ``(kept, dropped)``.

    ``verified`` is true when every model of ``roles`` (the paper: teacher and
    student; ``("teacher",)``: the teacher alone) answers the pruned
    instruction correctly, false otherwise; records with an unchanged
    instruction stay null.
    """
    if not roles or set(roles) - {"teacher", "student"}:
        raise ValueError(f"roles must be teacher and/or student, got {list(roles)}")
    checkable = [r for r in records if r.changes_instruction]
    if checkable:
        prompts = [{"id": r.id, "instruction": r.instruction} for r in checkable]
        answers = [answer(role, prompts) for role in roles]
        for i, rec in enumerate(checkable):
            sample = rec.as_sample()
            rec.verified = all(check(got[i], sample) for got in answers)
    kept = [r for r in records if r.verified is not False]
    dropped = [r for r in records if r.verified is False]
    return kept, dropped
