"""Which instruction characters are flagged, from any of the files that know it.

Three inputs name flagged spans of an *original* sample's instruction
(``[start, end)`` character offsets into its ``instruction`` field):

* a detections file (``leaf detect``): each record's ``"spans"``; the text
  comes from ``--samples`` (matched by ``id``);
* a counterfactuals file (``leaf prune``): each record's ``"removed"``; all
  records of one ``source_id`` are merged. The original comes from
  ``--samples`` (matched by ``source_id``) or, without it, is rebuilt by
  putting the removed text back into the pruned instruction;
* a samples file whose records carry ``meta.confounder_spans``
  (``[[start, end], ...]``), e.g. synthetic data with known distractors.

Only instruction-level spans are analysed; response-level records are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leaf.data.counterfactuals import Counterfactual, read_counterfactuals
from leaf.data.detections import read_detections_of
from leaf.data.records import DataError, Sample, id_key, iter_source, load_samples
from leaf.data.refs import is_ref
from leaf.data.spans import Span, merge_overlapping

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpanSample:
    """An original sample and its flagged instruction spans (sorted, merged)."""

    id: str | int
    instruction: str
    response: str
    spans: list[Span]


def restore_original(pruned: str, removed: Sequence[dict[str, Any]]) -> str:
    """Put ``removed`` pieces (offsets into the original) back into ``pruned``."""
    text = pruned
    for piece in sorted(removed, key=lambda r: int(r["start"])):
        start = int(piece["start"])
        text = text[:start] + piece["text"] + text[start:]
    return text


def kind_of(record: dict[str, Any]) -> str:
    """``counterfactuals``, ``detections`` or ``samples`` for one JSON record."""
    if "removed" in record:
        return "counterfactuals"
    if "spans" in record and "instruction" not in record:
        return "detections"
    if isinstance(record.get("meta"), dict) and "confounder_spans" in record["meta"]:
        return "samples"
    return "unknown"


def _check_spans(spans: Any, where: str, field: str, length: int, problems: list[str]) -> list[Span] | None:
    ok = isinstance(spans, list) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in p)
        for p in spans
    )
    if not ok:
        problems.append(f"{where}: field '{field}': expected a list of [start, end] integer pairs")
        return None
    bad = [p for p in spans if not 0 <= p[0] <= p[1] <= length]
    if bad:
        problems.append(f"{where}: field '{field}': span {list(bad[0])} outside the instruction (length {length})")
        return None
    return merge_overlapping(spans)


def load_span_samples(data: str | Path, samples: str | Path | None = None) -> tuple[str, list[SpanSample]]:
    """Read ``data`` (detections, counterfactuals or samples); return its kind and the span samples.

    Raises :class:`DataError` naming file, line and field for every problem.
    """
    if not is_ref(data):  # a dataset reference (hf:...) is read by leaf.data.records like a file
        data = Path(data)
        if not data.exists():
            raise DataError([f"{data}: file not found"])
    records: list[tuple[int, dict[str, Any]]] = []
    problems: list[str] = []
    at, rows = iter_source(data)
    for lineno, obj, err in rows:
        if err:
            problems.append(f"{at}{lineno}: {err}")
        elif not isinstance(obj, dict):
            problems.append(f"{at}{lineno}: expected a JSON object")
        else:
            records.append((lineno, obj))
    if problems:
        raise DataError(problems)
    if not records:
        raise DataError([f"{data}: no records (file is empty)"])
    kinds = {kind_of(r) for _, r in records}
    if len(kinds) != 1 or "unknown" in kinds:
        lineno = next((n for n, r in records if kind_of(r) == "unknown"), records[0][0])
        raise DataError(
            [
                f"{at}{lineno}: cannot tell the kind of record: expected a detection ('spans'), "
                "a counterfactual ('removed') or a sample with 'meta.confounder_spans', all of one kind"
            ]
        )
    kind = kinds.pop()
    originals: dict[str, Sample] | None = None
    if kind == "samples":
        originals = {id_key(s.id): s for s in load_samples(data)}
    elif samples is not None:
        originals = {id_key(s.id): s for s in load_samples(samples)}
    elif kind == "detections":
        raise DataError([f"{data}: a detections file has no text; pass the samples it was made from with --samples"])

    out: list[SpanSample] = []
    other_level = 0
    if kind == "samples":
        assert originals is not None
        for lineno, rec in records:
            sample = originals[id_key(rec["id"])]
            checked = _check_spans(rec["meta"]["confounder_spans"], f"{at}{lineno}", "meta.confounder_spans",
                                   len(sample.instruction), problems)
            if checked is not None:
                out.append(SpanSample(sample.id, sample.instruction, sample.response, checked))
    elif kind == "detections":
        assert originals is not None

        for det in read_detections_of(data, originals):
            if det.response_level:
                other_level += 1
                continue
            sample = originals[id_key(det.id)]
            out.append(SpanSample(sample.id, sample.instruction, sample.response, merge_overlapping(det.spans)))
    else:
        groups: dict[str, list[Counterfactual]] = {}
        for rec in read_counterfactuals(data):
            if rec.level != "instruction":
                other_level += 1
                continue
            groups.setdefault(id_key(rec.source_id if rec.source_id is not None else rec.id), []).append(rec)
        lines = {id_key(r.get("id")): n for n, r in records}
        for key, recs in groups.items():
            where = f"{data}:{lines[id_key(recs[0].id)]}"
            if originals is not None:
                sample = originals.get(key)
                if sample is None:
                    problems.append(f"{where}: field 'source_id': {key!r} not found in {samples}")
                    continue
                instruction, response, sid = sample.instruction, sample.response, sample.id
            else:
                # One record's pruned text plus its own removed pieces gives the original back.
                first = recs[0]
                instruction = restore_original(first.instruction, [r.to_json() for r in first.removed])
                response, sid = first.response, first.source_id if first.source_id is not None else first.id
            spans = []
            for rec in recs:
                for piece in rec.removed:
                    if piece.field != "instruction":
                        continue
                    if instruction[piece.start : piece.end] != piece.text:
                        problems.append(
                            f"{data}:{lines[id_key(rec.id)]}: field 'removed': text {piece.text!r} is not at "
                            f"[{piece.start}, {piece.end}) of the original instruction"
                        )
                    spans.append((piece.start, piece.end))
            checked = _check_spans([list(sp) for sp in spans], where, "removed", len(instruction), problems)
            if checked is not None:
                out.append(SpanSample(sid, instruction, response, checked))
    if problems:
        raise DataError(problems)
    if other_level:
        log.warning("%s: skipped %d record(s) that are not instruction-level", data, other_level)
    return kind, out
