"""The detection record: what ``leaf detect`` writes and every later stage reads (docs/detect.md).

One JSON object per line. Instruction level::

    {"id", "level": "instruction", "method", "tokens": [TokenScore...], "spans": [[start, end]...],
     "loss_teacher", "loss_student", "truncated"}

Response level (one record per later response segment) adds ``key`` (``id@segment``)
after ``id``, and ``response_spans``, ``segment``, ``loss_start``, ``loss_end``
after ``spans``; its tokens carry ``field``. A token carries ``surprisal`` when
the method computed it (``ppl``).

This module is the one place that defines the record, builds it from JSON
(validating every field, with file:line errors) and writes it back; readers
use the typed attributes, never ``.get`` fallbacks. Files written by
``leaf detect`` carry ``schema_version`` in their sidecar
(:mod:`leaf.data.jsonl`); a file of another version is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaf.data.records import DataError, Sample, SampleId, id_key, read_validated
from leaf.data.spans import FieldSpan, Span

SCHEMA = "leaf.detections"
SCHEMA_VERSION = 1
LEVELS = ("instruction", "response")
FIELDS = ("instruction", "response")


@dataclass
class TokenScore:
    """One scored token of the student: its text and ``[start, end)`` in its field, saliencies, score, flag."""

    text: str
    start: int
    end: int
    g_teacher: float | None
    g_student: float | None
    score: float | None  #: normalised saliency difference d (None: degenerate sample, nothing flagged)
    flag: bool
    field: str = "instruction"
    surprisal: float | None = None  #: student surprisal in nats (ppl method only)

    def to_json(self, with_field: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "start": self.start, "end": self.end,
                               "g_teacher": self.g_teacher, "g_student": self.g_student, "score": self.score,
                               "flag": self.flag}
        if with_field:
            out["field"] = self.field
        if self.surprisal is not None:
            out["surprisal"] = self.surprisal
        return out


@dataclass
class Detection:
    """The detection of one sample (instruction level) or one later segment of it (response level)."""

    id: SampleId
    level: str
    method: str
    tokens: list[TokenScore]
    spans: list[Span]  #: flagged instruction spans
    loss_teacher: float | None
    loss_student: float | None
    truncated: int  #: characters cut from the left of the instruction
    key: str | None = None  #: ``id@segment`` at response level
    response_spans: list[Span] = field(default_factory=list)
    segment: int | None = None
    loss_start: int | None = None  #: response characters [loss_start, loss_end) formed the loss
    loss_end: int | None = None

    @property
    def unit_key(self) -> str:
        """The record's unique key in its file: ``key`` at response level, else the sample id."""
        return self.key if self.key is not None else id_key(self.id)

    @property
    def response_level(self) -> bool:
        return self.level == "response"

    def field_spans(self) -> list[FieldSpan]:
        """Every flagged span as ``(field, start, end)``: instruction spans first."""
        return [("instruction", s, e) for s, e in self.spans] + [("response", s, e) for s, e in self.response_spans]

    def tokens_of(self, name: str) -> list[TokenScore]:
        return [t for t in self.tokens if t.field == name]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if self.response_level:
            out["key"] = self.key
        out.update(level=self.level, method=self.method,
                   tokens=[t.to_json(self.response_level) for t in self.tokens],
                   spans=[list(s) for s in self.spans])
        if self.response_level:
            out.update(response_spans=[list(s) for s in self.response_spans], segment=self.segment,
                       loss_start=self.loss_start, loss_end=self.loss_end)
        out.update(loss_teacher=self.loss_teacher, loss_student=self.loss_student, truncated=self.truncated)
        return out


# ---------------------------------------------------------------------------- reading


class FieldChecker:
    """Collects problems of one record, each naming file:line and field."""

    def __init__(self, where: str, problems: list[str]) -> None:
        self.where, self.problems, self.ok = where, problems, True

    def bad(self, name: str, msg: str) -> None:
        self.ok = False
        self.problems.append(f"{self.where}: field '{name}': {msg}")

    def get(self, obj: dict[str, Any], name: str, kinds: tuple[type, ...], *, optional: bool = False,
            default: Any = None, label: str | None = None) -> Any:
        """``obj[name]`` checked against ``kinds``; ``label`` names a nested field in messages."""
        label = label or name
        if name not in obj or obj[name] is None:
            if not optional:
                self.bad(label, "missing")
            return default
        value = obj[name]
        if isinstance(value, bool) and bool not in kinds:
            self.bad(label, f"must be {' or '.join(k.__name__ for k in kinds)}, got bool")
            return default
        if not isinstance(value, kinds):
            self.bad(label, f"must be {' or '.join(k.__name__ for k in kinds)}, got {type(value).__name__}")
            return default
        return value

    def spans(self, obj: dict[str, Any], name: str, *, optional: bool = False) -> list[Span]:
        raw = self.get(obj, name, (list,), optional=optional, default=[])
        out: list[Span] = []
        for pair in raw:
            if not (isinstance(pair, list) and len(pair) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in pair)):
                self.bad(name, f"expected [start, end] integer pairs, got {pair!r}")
                return []
            if not 0 <= pair[0] < pair[1]:
                self.bad(name, f"span {pair} is empty, inverted or negative")
                return []
            out.append((pair[0], pair[1]))
        return out


def _number(c: FieldChecker, obj: dict[str, Any], name: str) -> float | None:
    value = c.get(obj, name, (int, float), optional=True)
    return None if value is None else float(value)


def _token(obj: Any, c: FieldChecker, level: str) -> TokenScore | None:
    if not isinstance(obj, dict):
        c.bad("tokens", f"expected objects, got {type(obj).__name__}")
        return None

    def get(name: str, kinds: tuple[type, ...], **kw: Any) -> Any:
        return c.get(obj, name, kinds, label=f"tokens.{name}", **kw)

    def number(name: str) -> float | None:
        value = get(name, (int, float), optional=True)
        return None if value is None else float(value)

    start, end = get("start", (int,), default=0), get("end", (int,), default=0)
    if c.ok and not 0 <= start <= end:
        c.bad("tokens", f"token range [{start}, {end}) is inverted or negative")
    name = get("field", (str,), optional=level == "instruction", default="instruction")
    if name not in FIELDS:
        c.bad("tokens.field", f"must be one of {', '.join(FIELDS)}, got {name!r}")
    return TokenScore(
        text=get("text", (str,), default=""), start=start, end=end, g_teacher=number("g_teacher"),
        g_student=number("g_student"), score=number("score"), flag=get("flag", (bool,), default=False),
        field=name, surprisal=number("surprisal"),
    )


def detection_from_json(obj: Any, where: str, problems: list[str]) -> Detection | None:
    """A validated :class:`Detection`, or ``None`` with the problems appended (file:line: field: ...)."""
    if not isinstance(obj, dict):
        problems.append(f"{where}: expected a JSON object, got {type(obj).__name__}")
        return None
    c = FieldChecker(where, problems)
    sid = c.get(obj, "id", (str, int))
    level = c.get(obj, "level", (str,), default="instruction")
    if level not in LEVELS:
        c.bad("level", f"must be one of {', '.join(LEVELS)}, got {level!r}")
    method = c.get(obj, "method", (str,), default="")
    raw_tokens = c.get(obj, "tokens", (list,), default=[])
    tokens = [t for t in (_token(t, c, level) for t in raw_tokens) if t is not None]
    det = Detection(
        id=sid, level=level, method=method, tokens=tokens, spans=c.spans(obj, "spans"),
        loss_teacher=_number(c, obj, "loss_teacher"), loss_student=_number(c, obj, "loss_student"),
        truncated=c.get(obj, "truncated", (int,), optional=True, default=0),
    )
    if level == "response":
        det.key = c.get(obj, "key", (str,))
        det.response_spans = c.spans(obj, "response_spans", optional=True)
        det.segment = c.get(obj, "segment", (int,), optional=True)
        det.loss_start = c.get(obj, "loss_start", (int,))
        det.loss_end = c.get(obj, "loss_end", (int,))
        if c.ok and not 0 < det.loss_start < det.loss_end:  # type: ignore[operator]
            c.bad("loss_start", f"loss range [{det.loss_start}, {det.loss_end}) is empty or inverted")
    return det if c.ok else None


def read_detections(path: str | Path,
                    check: Callable[[Detection, str, list[str]], None] | None = None) -> list[Detection]:
    """Every record of a detections file, validated; one :class:`DataError` lists all problems.

    ``check(detection, "file:line", problems)`` may add the caller's own checks
    (e.g. against the samples the detections are applied to) to the same report.
    """
    return read_validated(path, detection_from_json, lambda d: d.unit_key, what="record",
                          schema=(SCHEMA, SCHEMA_VERSION), check=check)


def detections_to_jsonl(detections: Iterable[Detection]) -> str:
    from leaf.data.jsonl import dumps

    return "".join(dumps(d.to_json()) + "\n" for d in detections)


__all__ = ["SCHEMA", "SCHEMA_VERSION", "Detection", "FieldChecker", "TokenScore", "detection_from_json", "read_detections",
           "detections_to_jsonl"]


def mismatch(det: Detection, instruction: str, response: str) -> str | None:
    """Why ``det`` was not made on this sample's text (``None`` when it fits): every span inside its field,
    and every token's text where its offsets say. Detections applied to other text would cut the wrong
    characters; this refuses them instead."""
    texts = {"instruction": instruction, "response": response}
    for name, spans, text in (("spans", det.spans, instruction), ("response_spans", det.response_spans, response)):
        bad = [sp for sp in spans if sp[1] > len(text)]
        if bad:
            return f"field '{name}': span {list(bad[0])} is outside the sample's text (length {len(text)})"
    for i, t in enumerate(det.tokens):
        if texts[t.field][t.start : t.end] != t.text:
            return (f"field 'tokens': token {i} {t.text!r} is not at [{t.start}, {t.end}) of the sample's {t.field} "
                    f"(there: {texts[t.field][t.start : t.end]!r})")
    return None


def read_detections_of(path: str | Path, samples: Mapping[str, Sample]) -> list[Detection]:
    """Detections checked against the samples they are applied to (``{id_key: Sample}``), in the same report:
    every record must name one of them and fit its text (:func:`mismatch`)."""

    def against_samples(det: Detection, where: str, problems: list[str]) -> None:
        sample = samples.get(id_key(det.id))
        if sample is None:
            problems.append(f"{where}: field 'id': {det.id!r} is not in the samples file")
        elif (why := mismatch(det, sample.instruction, sample.response)) is not None:
            problems.append(f"{where}: {why}: were the detections made on other data?")

    return read_detections(path, against_samples)


def as_detection(obj: dict[str, Any], where: str = "detection") -> Detection:
    """A :class:`Detection` from a JSON-like dict (API callers, tests); raises :class:`DataError` if invalid."""
    problems: list[str] = []
    det = detection_from_json(obj, where, problems)
    if det is None:
        raise DataError(problems)
    return det
