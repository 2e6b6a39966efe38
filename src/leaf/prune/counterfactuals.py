"""Counterfactual records (X \\ A, y) from samples and their detections.

* ``span`` strategy (the paper's): one record per flagged span;
* ``collective``: one record with every flagged span removed.

Instruction-level detections prune the instruction; the record's target is the
whole response (``loss_start: null``). Response-level detections (one per
later segment ``j``) may prune the instruction and the response *before*
segment ``j``; the record's response is that pruned prefix followed by segment
``j``, and ``loss_start`` marks where segment ``j`` begins in it, so the
distiller computes its KL on segment ``j`` only.

With ``intervention="mask"`` or ``"resample"`` (:mod:`leaf.prune.interventions`)
the flagged tokens are replaced instead of cut; records then also list each
change with its replacement and its offsets in the new text.

Resample may draw ``draws`` (K) times per record: each span (or the collective
record) then yields K records, ``<id>#d0`` ... ``<id>#d<K-1>`` (one draw keeps
the plain ``<id>``, so one-draw output is what it was before draws existed). A
draw whose text (instruction and response) equals an earlier draw of the same
record is skipped and counted as a duplicate; the kept draws keep their index,
so an id names its seed.

Record schema: docs/prune.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from leaf.data.counterfactuals import Change, Counterfactual, Removed
from leaf.data.detections import Detection
from leaf.data.records import Sample
from leaf.data.spans import FieldSpan
from leaf.prune.interventions import INTERVENTIONS, Replacement, flagged_tokens, replace_ranges
from leaf.prune.text import prune_text

#: ``replacer(record_id, sample, detection, flagged_tokens) -> replacements`` (mask / resample); a resample
#: replacer also takes ``draw=k`` (the k-th independent draw of that record).
Replacer = Callable[..., list[Replacement]]

log = logging.getLogger(__name__)

STRATEGIES = ("span", "collective")


@dataclass(frozen=True)
class Dropped:
    key: str
    reason: str
    duplicate: bool = False  #: a resample draw that repeats an earlier draw of the same record


def span_strength(det: Detection, span: FieldSpan) -> float:
    """How confounding a span is by its detection method's own signal (lower = stronger)."""
    field, s, e = span
    inside = [t for t in det.tokens if t.field == field and t.flag and t.start < e and t.end > s]
    if det.method == "ppl":
        return -max((t.surprisal or 0.0) for t in inside) if inside else 0.0
    if det.method == "random":
        return 0.0  # no signal: keep the order of appearance
    return min((t.score if t.score is not None else 1.0) for t in inside) if inside else 1.0


def choose_spans(det: Detection, max_spans: int | None) -> list[FieldSpan]:
    spans = det.field_spans()
    if max_spans is not None and len(spans) > max_spans:
        ranked = sorted(range(len(spans)), key=lambda i: (span_strength(det, spans[i]), i))[:max_spans]
        spans = [spans[i] for i in sorted(ranked)]
    return spans


def build_records(
    sample: Sample,
    det: Detection,
    *,
    strategy: str = "span",
    max_spans: int | None = None,
    intervention: str = "delete",
    replacer: Replacer | None = None,
    draws: int = 1,
    resample_from: str | None = None,
) -> tuple[list[Counterfactual], list[Dropped]]:
    """Counterfactual records of one detection (one sample, or one segment of it).

    ``replacer`` supplies the replacements of the mask / resample interventions;
    resample calls it ``draws`` times per record (``draw=0..draws-1``).
    ``resample_from``, when given, is stored on each resample record with its
    ``draw`` (None: the records carry neither, as before draws existed).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {STRATEGIES}")
    if intervention not in INTERVENTIONS:
        raise ValueError(f"unknown intervention {intervention!r}; use one of {INTERVENTIONS}")
    if intervention == "none":
        return [unpruned_record(sample, det)], []
    if intervention != "delete" and replacer is None:
        raise ValueError(f"the {intervention} intervention needs a replacer")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an integer >= 1, got {draws!r}")
    if draws > 1 and intervention != "resample":
        raise ValueError(f"{draws} draws need the resample intervention ({intervention} draws nothing)")
    spans = choose_spans(det, max_spans)
    key = det.unit_key
    groups = [[sp] for sp in spans] if strategy == "span" else ([spans] if spans else [])
    records: list[Counterfactual] = []
    dropped: list[Dropped] = []
    for n, group in enumerate(groups):
        rid = f"{key}#s{n}" if strategy == "span" else f"{key}#c"
        made: list[Counterfactual | Dropped]
        if intervention == "delete":
            made = [_record(sample, det, group, rid, strategy)]
        elif intervention == "resample":
            assert replacer is not None
            made = _draws(sample, det, group, rid, strategy, replacer, draws, resample_from)
        else:
            assert replacer is not None
            reps = replacer(rid, sample, det, flagged_tokens(det, group))
            made = [_replaced_record(sample, det, reps, rid, strategy, intervention) if reps else _unreplaceable(rid)]
        for rec in made:
            if isinstance(rec, Dropped):
                log.info("%s: %s", rec.key, rec.reason)
                dropped.append(rec)
            else:
                records.append(rec)
    return records, dropped


def _unreplaceable(rid: str) -> Dropped:
    return Dropped(rid, "no replaceable token (only punctuation or white space flagged)")


def _draws(sample: Sample, det: Detection, group: list[FieldSpan], rid: str, strategy: str, replacer: Replacer,
           draws: int, resample_from: str | None) -> list[Counterfactual | Dropped]:
    """The resample records of one span group: one per draw, ``<rid>#d<k>`` (one draw: ``rid``), duplicates skipped.

    Whether a token is replaceable does not depend on the draw, so a group with
    none is dropped once, under its plain id.
    """
    tokens = flagged_tokens(det, group)
    out: list[Counterfactual | Dropped] = []
    seen: dict[tuple[str, str], str] = {}
    for k in range(draws):
        reps = replacer(rid, sample, det, tokens, draw=k)
        if not reps:
            return [_unreplaceable(rid)]
        rec = _replaced_record(sample, det, reps, rid if draws == 1 else f"{rid}#d{k}", strategy, "resample")
        if resample_from is not None:
            rec.resample_from, rec.draw = resample_from, k
        text = (rec.instruction, rec.response)
        if text in seen:
            out.append(Dropped(rec.id, f"duplicate draw: same text as {seen[text]}", duplicate=True))
            continue
        seen[text] = rec.id
        out.append(rec)
    return out


def unpruned_record(sample: Sample, det: Detection) -> Counterfactual:
    """The analysed sample itself, unchanged, as a second-term record: re-weighting, with no intervention.

    It separates what pruning does from what giving the samples the student
    gets wrong more weight does (``lambda`` splits the loss between the terms).
    Instruction level only: a response-level detection names a segment whose
    unpruned record is the sample with its loss on that segment.
    """
    response, loss_start = sample.response, None
    if det.response_level:
        assert det.loss_start is not None and det.loss_end is not None
        response, loss_start = sample.response[: det.loss_end], det.loss_start
    return Counterfactual(id=f"{det.unit_key}#orig", source_id=sample.id, instruction=sample.instruction,
                          response=response, removed=[], strategy="none", level=det.level, method=det.method,
                          intervention="none", loss_start=loss_start, answer=sample.answer, meta=sample.meta)


def _record(sample: Sample, det: Detection, group: list[FieldSpan], rid: str, strategy: str) -> Counterfactual | Dropped:
    instr_spans = [(s, e) for f, s, e in group if f == "instruction"]
    instruction, instr_removed = prune_text(sample.instruction, instr_spans)
    if not instruction.strip():
        return Dropped(rid, "pruning would empty the instruction")
    removed = [Removed("instruction", s, e, sample.instruction[s:e]) for s, e in instr_removed]
    new_loss_start: int | None = None
    response = sample.response
    if det.response_level:
        assert det.loss_start is not None and det.loss_end is not None
        prefix = sample.response[: det.loss_start]
        resp_spans = [(s, e) for f, s, e in group if f == "response"]
        new_prefix, resp_removed = prune_text(prefix, resp_spans)
        if resp_spans and not new_prefix.strip():
            return Dropped(rid, "pruning would empty the response context")
        if prefix[-1:].isspace() and not new_prefix[-1:].isspace() and new_prefix:
            new_prefix += prefix[len(prefix.rstrip()):]  # keep the break before the target segment
        removed += [Removed("response", s, e, prefix[s:e]) for s, e in resp_removed]
        response = new_prefix + sample.response[det.loss_start : det.loss_end]
        new_loss_start = len(new_prefix)
    return _assemble(sample, det, rid, instruction, response, new_loss_start, removed, strategy, "delete")


def _assemble(sample: Sample, det: Detection, rid: str, instruction: str, response: str,
              loss_start: int | None, removed: list[Removed], strategy: str, intervention: str,
              changes: list[Change] | None = None) -> Counterfactual:
    return Counterfactual(
        id=rid, source_id=sample.id, instruction=instruction, response=response, removed=removed,
        strategy=strategy, level=det.level, method=det.method, intervention=intervention, loss_start=loss_start,
        verified=None, answer=sample.answer, meta=sample.meta, changes=changes,
    )


def _replaced_record(sample: Sample, det: Detection, reps: list[Replacement], rid: str, strategy: str,
                     intervention: str) -> Counterfactual:
    """A record whose flagged tokens are replaced (mask / resample) rather than cut."""
    def edits(field: str) -> list[tuple[int, int, str]]:
        return [(r.start, r.end, r.text) for r in reps if r.field == field]

    instruction, instr_changes = replace_ranges(sample.instruction, edits("instruction"))
    changes = [Change("instruction", **c) for c in instr_changes]
    response, new_loss_start = sample.response, None
    if det.response_level:
        assert det.loss_start is not None and det.loss_end is not None
        prefix, resp_changes = replace_ranges(sample.response[: det.loss_start], edits("response"))
        changes += [Change("response", **c) for c in resp_changes]
        response, new_loss_start = prefix + sample.response[det.loss_start : det.loss_end], len(prefix)
    removed = [Removed(c.field, c.start, c.end, c.text) for c in changes]
    return _assemble(sample, det, rid, instruction, response, new_loss_start, removed, strategy, intervention,
                     changes)
