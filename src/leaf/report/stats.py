"""Numbers the report shows, computed from records (no I/O, no HTML)."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from leaf.data.counterfactuals import Counterfactual
from leaf.data.detections import Detection


def minmax(values: Sequence[float]) -> list[float]:
    """Scale to [0, 1] with the detection rule's own normalisation (:func:`leaf.detect.decision.minmax`);
    a constant or non-finite vector -> all 0."""
    import torch

    from leaf.detect.decision import minmax as normalise

    scaled = normalise(torch.tensor(values, dtype=torch.float64)) if values else None
    return [0.0 for _ in values] if scaled is None else scaled.tolist()


def span_text(record: Detection, span: Sequence[int], instruction: str | None) -> str:
    """The text of ``span``: from the instruction when known, else from the tokens it covers."""
    start, end = int(span[0]), int(span[1])
    if instruction is not None:
        return instruction[start:end]
    pieces, last = [], None
    for tok in record.tokens:
        if tok.end > start and tok.start < end:
            if last is not None and tok.start > last:
                pieces.append(" ")
            pieces.append(tok.text)
            last = tok.end
    return "".join(pieces).strip()


def detection_stats(records: list[Detection], instructions: dict[str, str] | None = None, top: int = 20) -> dict[str, Any]:
    """Counts over a detections file: tokens, flagged share, spans per sample, frequent flagged strings."""
    instructions = instructions or {}
    n_tokens = sum(len(r.tokens) for r in records)
    n_flagged = sum(1 for r in records for t in r.tokens if t.flag)
    spans_per = [len(r.spans) for r in records]
    lengths = [e - s for r in records for s, e in r.spans]
    strings: Counter[str] = Counter()
    for r in records:
        instruction = instructions.get(str(r.id))
        for span in r.spans:
            text = " ".join(span_text(r, span, instruction).split())
            if text:
                strings[text] += 1
    losses = {}
    for key in ("loss_teacher", "loss_student"):
        values = [getattr(r, key) for r in records]
        finite = [v for v in values if v is not None and math.isfinite(v)]
        losses[key] = statistics.fmean(finite) if finite else None
    return {
        "samples": len(records),
        "methods": dict(Counter(r.method for r in records)),
        "tokens": n_tokens,
        "flagged_tokens": n_flagged,
        "flagged_percent": 100.0 * n_flagged / n_tokens if n_tokens else None,
        "spans": sum(spans_per),
        "spans_per_sample_mean": statistics.fmean(spans_per) if spans_per else None,
        "spans_per_sample_median": statistics.median(spans_per) if spans_per else None,
        "spans_per_sample_max": max(spans_per) if spans_per else None,
        "samples_with_spans": sum(1 for n in spans_per if n),
        "spans_per_sample_histogram": dict(sorted(Counter(spans_per).items())),
        "span_chars_mean": statistics.fmean(lengths) if lengths else None,
        "truncated_samples": sum(1 for r in records if r.truncated),
        "top_strings": strings.most_common(top),
        **{f"{k}_mean": v for k, v in losses.items()},
    }


def counterfactual_stats(records: list[Counterfactual]) -> dict[str, Any]:
    removed_chars = [sum(p.end - p.start for p in r.removed) for r in records]
    return {
        "records": len(records),
        "sources": len({str(r.source_id) for r in records}),
        "strategy": dict(Counter(r.strategy for r in records)),
        "level": dict(Counter(r.level for r in records)),
        "verified": dict(Counter(str(r.verified).lower() for r in records)),
        "removed_chars_mean": statistics.fmean(removed_chars) if removed_chars else None,
    }


def evaluation_table(results: list[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns (benchmarks in order of first appearance) and rows ``{name, cells: {bench: result}, average}``.

    The average is over the benchmarks the row has (accuracy in 0-1), as in the paper's tables.
    """
    columns: list[str] = []
    rows = []
    for stem, obj in results:
        cells = {}
        for bench, res in obj.get("benchmarks", {}).items():
            if isinstance(res, dict) and isinstance(res.get("accuracy"), (int, float)):
                cells[bench] = res
                if bench not in columns:
                    columns.append(bench)
        accs = [float(c["accuracy"]) for c in cells.values()]
        average = statistics.fmean(accs) if accs else None
        rows.append({"name": str(obj.get("model") or stem), "file": stem, "cells": cells, "average": average})
    return columns, rows
