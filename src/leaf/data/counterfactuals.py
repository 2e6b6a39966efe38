"""The counterfactual record: what ``leaf prune`` writes and ``leaf distill`` trains on (docs/prune.md).

One JSON object per line (``leaf prune`` writes every field; a hand-made file
needs only ``id``, ``instruction`` and ``response``, the rest defaulting to
no provenance: ``source_id`` null, ``removed`` empty, ``strategy``, ``method``
and ``intervention`` ``"none"``, ``level`` ``"instruction"``)::

    {"id", "source_id", "instruction", "response", ["answer"], ["meta"],
     "removed": [{"field", "start", "end", "text"}...],
     ["changes": [{"field", "start", "end", "text", "replacement", "new_start", "new_end"}...]],
     "strategy", "level", "method", "intervention", ["resample_from", "draw"], "loss_start", "verified"}

``removed`` ranges are offsets into the *original* sample's field; ``changes``
(mask / resample) also give where each replacement sits in the new text.
``loss_start`` (response level) is where the distilled segment begins in
``response``; ``null`` means the whole response. ``verified`` is ``true`` /
``false`` after ``prune --verify``, else ``null``. ``resample_from``
(``"student"`` / ``"teacher"`` / ``"uniform"``) and ``draw`` (0-based) are
written on resample records of a run with ``--resample-from uniform`` or
``--draws`` > 1; other runs leave them out (the records stay as version 1
wrote them; the sidecar names every resample run's source).

Schema versions: 2 added ``resample_from`` and ``draw``; version 1 files
(without them) are still read.

This module is the one place that defines the record, reads it (validating
every field with file:line errors) and writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaf.data.detections import FIELDS, LEVELS, FieldChecker
from leaf.data.jsonl import dumps
from leaf.data.records import Sample, SampleId, id_key, read_validated

SCHEMA = "leaf.counterfactuals"
SCHEMA_VERSION = 2  #: 2: optional ``resample_from`` and ``draw`` (resample draws)
OLDEST_READABLE = 1  #: version 1 files read as records without ``resample_from`` / ``draw``
STRATEGIES = ("span", "collective", "none")
INTERVENTIONS = ("delete", "mask", "resample", "none")
RESAMPLE_SOURCES = ("student", "teacher", "uniform")


@dataclass
class Removed:
    """A range of the original field that the counterfactual no longer has (or has replaced)."""

    field: str
    start: int
    end: int
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "start": self.start, "end": self.end, "text": self.text}


@dataclass
class Change(Removed):
    """A replaced range (mask / resample): the new text and where it sits in the counterfactual."""

    replacement: str = ""
    new_start: int = 0
    new_end: int = 0

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "replacement": self.replacement, "new_start": self.new_start,
                "new_end": self.new_end}


@dataclass
class Counterfactual:
    """One counterfactual sample (X \\ A, y) of one source sample."""

    id: str
    source_id: SampleId | None  #: the original sample (None in a hand-made file that does not say)
    instruction: str
    response: str
    removed: list[Removed]
    strategy: str
    level: str
    method: str
    intervention: str
    loss_start: int | None = None
    verified: bool | None = None
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    changes: list[Change] | None = None
    resample_from: str | None = None  #: resample: whose distribution (or uniform) the replacements came from
    draw: int | None = None  #: resample: which of the record's independent draws (0-based)

    def as_sample(self) -> Sample:
        """The record as a training / checking sample (its own id, instruction, response, answer)."""
        return Sample(id=self.id, instruction=self.instruction, response=self.response, answer=self.answer,
                      meta=self.meta)

    @property
    def changes_instruction(self) -> bool:
        return any(r.field == "instruction" for r in self.removed)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "source_id": self.source_id, "instruction": self.instruction,
                               "response": self.response}
        if self.answer is not None:
            out["answer"] = self.answer
        if self.meta:
            out["meta"] = self.meta
        out["removed"] = [r.to_json() for r in self.removed]
        if self.changes is not None:
            out["changes"] = [c.to_json() for c in self.changes]
        out.update(strategy=self.strategy, level=self.level, method=self.method, intervention=self.intervention)
        if self.resample_from is not None:
            out["resample_from"] = self.resample_from
        if self.draw is not None:
            out["draw"] = self.draw
        out.update(loss_start=self.loss_start, verified=self.verified)
        return out


def _ranges(c: FieldChecker, obj: dict[str, Any], name: str, cls: type[Removed]) -> list[Any]:
    out = []
    for item in c.get(obj, name, (list,), default=[]):
        if not isinstance(item, dict):
            c.bad(name, f"expected objects, got {type(item).__name__}")
            return []
        values = {
            "field": c.get(item, "field", (str,), optional=True, default="instruction", label=f"{name}.field"),
            "start": c.get(item, "start", (int,), default=0, label=f"{name}.start"),
            "end": c.get(item, "end", (int,), default=0, label=f"{name}.end"),
            "text": c.get(item, "text", (str,), default="", label=f"{name}.text"),
        }
        if values["field"] not in FIELDS:
            c.bad(f"{name}.field", f"must be one of {', '.join(FIELDS)}, got {values['field']!r}")
        if not 0 <= values["start"] <= values["end"]:
            c.bad(name, f"range [{values['start']}, {values['end']}) is inverted or negative")
        if cls is Change:
            values.update(replacement=c.get(item, "replacement", (str,), default="", label=f"{name}.replacement"),
                          new_start=c.get(item, "new_start", (int,), default=0, label=f"{name}.new_start"),
                          new_end=c.get(item, "new_end", (int,), default=0, label=f"{name}.new_end"))
        out.append(cls(**values))
    return out


def counterfactual_from_json(obj: Any, where: str, problems: list[str]) -> Counterfactual | None:
    """A validated :class:`Counterfactual`, or ``None`` with the problems appended."""
    if not isinstance(obj, dict):
        problems.append(f"{where}: expected a JSON object, got {type(obj).__name__}")
        return None
    c = FieldChecker(where, problems)
    rid = c.get(obj, "id", (str, int), default="")
    rec = Counterfactual(
        id=str(rid), source_id=c.get(obj, "source_id", (str, int), optional=True),
        instruction=c.get(obj, "instruction", (str,), default=""), response=c.get(obj, "response", (str,), default=""),
        removed=_ranges(c, obj, "removed", Removed) if "removed" in obj else [],
        # provenance: written by `leaf prune`; a hand-made file may leave it out ("none")
        strategy=c.get(obj, "strategy", (str,), optional=True, default="none"),
        level=c.get(obj, "level", (str,), optional=True, default="instruction"),
        method=c.get(obj, "method", (str,), optional=True, default="none"),
        intervention=c.get(obj, "intervention", (str,), optional=True, default="none"),
        loss_start=c.get(obj, "loss_start", (int,), optional=True),
        verified=c.get(obj, "verified", (bool,), optional=True),
        answer=None if obj.get("answer") is None else str(c.get(obj, "answer", (str, int, float))),
        meta=c.get(obj, "meta", (dict,), optional=True, default={}),
        changes=_ranges(c, obj, "changes", Change) if "changes" in obj else None,
        resample_from=c.get(obj, "resample_from", (str,), optional=True),
        draw=c.get(obj, "draw", (int,), optional=True),
    )
    for name, value, allowed in (("level", rec.level, LEVELS), ("strategy", rec.strategy, STRATEGIES),
                                 ("intervention", rec.intervention, INTERVENTIONS)):
        if c.ok and value not in allowed:
            c.bad(name, f"must be one of {', '.join(allowed)}, got {value!r}")
    if c.ok and rec.resample_from is not None and rec.resample_from not in RESAMPLE_SOURCES:
        c.bad("resample_from", f"must be one of {', '.join(RESAMPLE_SOURCES)}, got {rec.resample_from!r}")
    if c.ok and rec.draw is not None and rec.draw < 0:
        c.bad("draw", f"must be >= 0, got {rec.draw}")
    for name in ("resample_from", "draw"):
        if c.ok and getattr(rec, name) is not None and rec.intervention != "resample":
            c.bad(name, f"only a resample record has one (intervention is {rec.intervention!r})")
    for name in ("instruction", "response"):
        if c.ok and not getattr(rec, name).strip():
            c.bad(name, "is empty")
    if c.ok and rec.loss_start is not None and not 0 <= rec.loss_start < len(rec.response):
        c.bad("loss_start", f"{rec.loss_start} is outside the response (length {len(rec.response)})")
    return rec if c.ok else None


def read_counterfactuals(path: str | Path) -> list[Counterfactual]:
    """Every record of a counterfactuals file, validated (duplicate ids refused)."""
    return read_validated(path, counterfactual_from_json, lambda r: id_key(r.id), what="id",
                          schema=(SCHEMA, SCHEMA_VERSION, OLDEST_READABLE))


def write_counterfactuals(path: str | Path, records: list[Counterfactual],
                          settings: dict[str, Any] | None = None, **provenance: Any) -> None:
    """Write the records (atomically: a temporary file renamed at the end) and their sidecar.

    ``settings`` (``leaf prune``: ``{"detection": the detections' settings, "prune": its own}``) go into the
    sidecar for the record (the model card of `leaf distill` reads them); readers do not check them.
    ``provenance`` (e.g. ``resample_from``, ``draws``, ``seed``) goes into the sidecar beside the schema.
    """
    from leaf.data.jsonl import write_atomic, write_sidecar

    write_atomic(path, "".join(dumps(r.to_json()) + "\n" for r in records))
    write_sidecar(path, SCHEMA, SCHEMA_VERSION, **({"settings": settings} if settings else {}), **provenance)


__all__ = ["OLDEST_READABLE", "RESAMPLE_SOURCES", "SCHEMA", "SCHEMA_VERSION", "Change", "Counterfactual", "Removed",
           "counterfactual_from_json", "read_counterfactuals", "write_counterfactuals"]
