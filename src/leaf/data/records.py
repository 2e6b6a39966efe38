"""The sample format every stage reads: one JSON object per line.

Fields (see docs/data-format.md):

* ``id`` -- string or int, unique in the file;
* ``instruction`` -- non-empty string (the user turn);
* ``response`` -- non-empty string (the reference / teacher answer);
* ``answer`` -- optional string (or number) used by answer checkers;
* ``meta`` -- optional object, passed through untouched;
* ``teacher_correct`` / ``student_correct`` -- optional booleans, filled by
  ``leaf label`` and used by ``leaf detect --select student-wrong``.

Any other field is kept in :attr:`Sample.extra` and written back unchanged,
so later stages (counterfactual records, say) extend the format freely.

Validation collects *every* problem of a file, each naming file, line and
field, and raises one :class:`DataError` before any model is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from leaf.data.errors import DataError as DataError  # re-exported: readers import it from here
from leaf.data.jsonl import iter_jsonl

SampleId = str | int

KNOWN_FIELDS = ("id", "instruction", "response", "answer", "meta", "teacher_correct", "student_correct")


@dataclass(frozen=True)
class Sample:
    """One instruction/response pair."""

    id: SampleId
    instruction: str
    response: str
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    teacher_correct: bool | None = None
    student_correct: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "instruction": self.instruction, "response": self.response}
        if self.answer is not None:
            out["answer"] = self.answer
        if self.meta:
            out["meta"] = self.meta
        if self.teacher_correct is not None:
            out["teacher_correct"] = self.teacher_correct
        if self.student_correct is not None:
            out["student_correct"] = self.student_correct
        out.update(self.extra)
        return out


def _check_record(obj: Any, where: str, problems: list[str]) -> Sample | None:
    if not isinstance(obj, dict):
        problems.append(f"{where}: expected a JSON object, got {type(obj).__name__}")
        return None
    ok = True

    def bad(field_name: str, msg: str) -> None:
        nonlocal ok
        ok = False
        problems.append(f"{where}: field '{field_name}': {msg}")

    for name in ("id", "instruction", "response"):
        if name not in obj:
            bad(name, "missing")
    sid = obj.get("id")
    if "id" in obj and (isinstance(sid, bool) or not isinstance(sid, (str, int))):
        bad("id", f"must be a string or an integer, got {type(sid).__name__}")
    elif isinstance(sid, str) and not sid.strip():
        bad("id", "is empty")
    for name in ("instruction", "response"):
        if name in obj:
            value = obj[name]
            if not isinstance(value, str):
                bad(name, f"must be a string, got {type(value).__name__}")
            elif not value.strip():
                bad(name, "is empty")
    answer = obj.get("answer")
    if answer is not None and (isinstance(answer, bool) or not isinstance(answer, (str, int, float))):
        bad("answer", f"must be a string or a number, got {type(answer).__name__}")
    if "meta" in obj and obj["meta"] is not None and not isinstance(obj["meta"], dict):
        bad("meta", f"must be an object, got {type(obj['meta']).__name__}")
    for name in ("teacher_correct", "student_correct"):
        if obj.get(name) is not None and not isinstance(obj[name], bool):
            bad(name, f"must be true, false or null, got {obj[name]!r}")
    if not ok:
        return None
    return Sample(
        id=sid,
        instruction=obj["instruction"],
        response=obj["response"],
        answer=None if answer is None else str(answer),
        meta=obj.get("meta") or {},
        teacher_correct=obj.get("teacher_correct"),
        student_correct=obj.get("student_correct"),
        extra={k: v for k, v in obj.items() if k not in KNOWN_FIELDS},
    )


T = TypeVar("T")


def read_validated(
    path: str | Path,
    parse: Callable[[Any, str, list[str]], T | None],
    key: Callable[[T], str],
    *,
    what: str,
    plural: str = "records",
    schema: tuple[str, int] | tuple[str, int, int] | None = None,
    check: Callable[[T, str, list[str]], None] | None = None,
) -> list[T]:
    """The one reader of every record file: parse each line, refuse duplicates, report every problem.

    ``parse(obj, "file:line", problems)`` returns the record or ``None`` after
    appending its problems; ``key`` names a record for the duplicate check;
    ``check`` adds the caller's own checks; ``schema`` (name, version) is
    checked against the file's sidecar (name, version, oldest readable version: an older one is read too). Raises one :class:`DataError` listing
    every problem of the file, each naming file, line and field.
    """
    from leaf.data.jsonl import check_schema
    from leaf.data.refs import is_ref

    rows: Iterable[tuple[int, Any, str | None]]
    if is_ref(path):  # a dataset reference (leaf.data.refs): rows named "REF row I"
        ref = dataset_ref(path)
        rows, at, what_line, name = _ref_rows(ref), f"{ref} row ", "row", str(ref)
    else:
        path = Path(path)
        if not path.exists():
            raise DataError([f"{path}: file not found"])
        if schema is not None:
            check_schema(path, *schema)
        rows, at, what_line, name = iter_jsonl(path), f"{path}:", "line", str(path)
    problems: list[str] = []
    records: list[T] = []
    seen: dict[str, int] = {}
    for lineno, obj, err in rows:
        where = f"{at}{lineno}"
        if err:
            problems.append(f"{where}: {err}")
            continue
        record = parse(obj, where, problems)
        if record is None:
            continue
        k = key(record)
        if k in seen:
            problems.append(f"{where}: field 'id': duplicate {what} {k!r} (first on {what_line} {seen[k]})")
            continue
        seen[k] = lineno
        if check is not None:
            check(record, where, problems)
        records.append(record)
    if not records and not problems:
        problems.append(f"{name}: no {plural} ({'the split is empty' if what_line == 'row' else 'file is empty'})")
    if problems:
        raise DataError(problems)
    return records


def dataset_ref(value: str | Path) -> Any:
    """The parsed :class:`~leaf.data.refs.DatasetRef` of a reference; a malformed one is a :class:`DataError`."""
    from leaf.data.refs import RefError, parse_ref

    try:
        return parse_ref(value)
    except RefError as exc:
        raise DataError([str(exc)]) from None


def _ref_rows(ref: Any) -> Iterator[tuple[int, Any, str | None]]:
    """``(row, record, None)`` of a dataset reference; a reference that cannot be read is one :class:`DataError`."""
    from leaf.data.refs import RefError, load_rows

    try:
        yield from ((i, row, None) for i, row in load_rows(ref))
    except RefError as exc:
        raise DataError([str(exc)]) from None


def iter_source(path: str | Path) -> tuple[str, Iterator[tuple[int, Any, str | None]]]:
    """``(prefix, rows)`` of a record file (``"FILE:"``, its JSONL lines) or of a dataset reference
    (``"REF row "``, its rows): ``prefix + str(n)`` names record ``n`` in messages."""
    from leaf.data.refs import is_ref

    if is_ref(path):
        ref = dataset_ref(path)
        return f"{ref} row ", _ref_rows(ref)
    return f"{path}:", iter_jsonl(path)


def line_numbers(path: str | Path) -> dict[str, int]:
    """``{id: line}`` of a record file (``{id: row}`` of a dataset reference), to name the line of a problem
    found after reading."""
    from leaf.data.refs import is_ref

    out: dict[str, int] = {}
    for lineno, obj, _err in (_ref_rows(path) if is_ref(path) else iter_jsonl(path)):
        if isinstance(obj, dict) and isinstance(obj.get("id"), (str, int)):
            out.setdefault(id_key(obj["id"]), lineno)
    return out


def record_locations(path: str | Path) -> dict[str, str]:
    """``{id: "FILE:LINE"}`` of a record file, ``{id: "REF row I"}`` of a dataset reference."""
    from leaf.data.refs import is_ref

    at = f"{dataset_ref(path)} row " if is_ref(path) else f"{path}:"
    return {k: f"{at}{n}" for k, n in line_numbers(path).items()}


def source_bytes(path: str | Path) -> bytes:
    """The content a samples source is identified by (resume and cache checks): a file's bytes; a dataset
    reference's rows as JSON lines, after the field mapping (so a changed dataset is seen as changed)."""
    from leaf.data.refs import is_ref

    if not is_ref(path):
        return Path(path).read_bytes()
    import json

    ref = dataset_ref(path)
    rows = (json.dumps(row, sort_keys=True, default=str) for _, row, _ in _ref_rows(ref))
    return (str(ref) + "\n" + "\n".join(rows)).encode()


def load_samples(path: str | Path) -> list[Sample]:
    """Read and validate a samples file or dataset reference (``hf:NAME@SPLIT``, :mod:`leaf.data.refs`);
    raise :class:`DataError` listing every problem."""
    return read_validated(path, _check_record, lambda s: id_key(s.id), what="id", plural="samples")


def id_key(sample_id: SampleId) -> str:
    """Ids compare as strings across stages (``7`` and ``"7"`` name the same sample)."""
    return str(sample_id)


def select_samples(samples: Iterable[Sample], select: str) -> list[Sample]:
    """``all`` keeps everything; ``student-wrong`` keeps teacher-right, student-wrong samples.

    ``student-wrong`` needs ``teacher_correct`` and ``student_correct`` on every
    record (``leaf label`` fills them); a record without them is an error.
    """
    samples = list(samples)
    if select == "all":
        return samples
    if select != "student-wrong":
        raise ValueError(f"unknown selection {select!r}; use 'all' or 'student-wrong'")
    unlabelled = [s.id for s in samples if s.teacher_correct is None or s.student_correct is None]
    if unlabelled:
        raise DataError(
            [
                f"sample {sid!r}: --select student-wrong needs fields 'teacher_correct' and "
                "'student_correct' (run `leaf label` first)"
                for sid in unlabelled
            ]
        )
    return [s for s in samples if s.teacher_correct and not s.student_correct]
