"""How well do detections find the irrelevant sentences of a distractor benchmark?

Scores one or more ``leaf detect`` outputs against the ground-truth character
spans that ``leaf distractors`` writes into each sample's
``meta.confounder_spans``: token-level precision / recall / F1, the hit rate
(share of distracted samples where at least one flagged token overlaps the
irrelevant sentence), the share of tokens flagged, and the hit rate per
distractor kind. The last line per file is the chance level: the share of
eligible (non-blank) instruction tokens that lie inside the irrelevant
sentence, which is the precision a random pick of the same budget expects.

    python benchmarks/detection_vs_truth.py --data dist_train.jsonl det.jsonl det-random-0.jsonl [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Any

from leaf.data.detections import Detection, read_detections
from leaf.data.jsonl import read_jsonl
from leaf.data.spans import overlaps
from leaf.demo.metrics import detection_quality


def truth_of(rows: list[dict[str, Any]]) -> tuple[dict[str, list[list[int]]], dict[str, str]]:
    truth: dict[str, list[list[int]]] = {}
    kinds: dict[str, str] = {}
    for row in rows:
        meta = row.get("meta") or {}
        truth[str(row["id"])] = [list(s) for s in meta.get("confounder_spans", [])]
        kinds[str(row["id"])] = str(meta.get("kind", "-"))
    return truth, kinds


def chance_precision(detections: list[Detection], truth: dict[str, list[list[int]]]) -> float:
    inside = eligible = 0
    for det in detections:
        spans = truth.get(str(det.id), [])
        for t in det.tokens_of("instruction"):
            if t.text.strip():
                eligible += 1
                inside += overlaps(t.start, t.end, spans)
    return inside / eligible if eligible else 0.0


def score(path: str, truth: dict[str, list[list[int]]], kinds: dict[str, str]) -> dict[str, Any]:
    detections = [d for d in read_detections(path) if not d.response_level]
    out: dict[str, Any] = dict(detection_quality(detections, truth))
    by_kind: dict[str, list[Detection]] = defaultdict(list)
    for det in detections:
        by_kind[kinds.get(str(det.id), "-")].append(det)
    out["hit_rate_by_kind"] = {k: detection_quality(v, truth)["hit_rate"] for k, v in sorted(by_kind.items())}
    out["chance_precision"] = chance_precision(detections, truth)
    out["method"] = detections[0].method if detections else "-"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("detections", nargs="+", help="leaf detect outputs (instruction level)")
    parser.add_argument("--data", required=True, help="the samples detected, with meta.confounder_spans")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    truth, kinds = truth_of(read_jsonl(args.data))
    results = {path: score(path, truth, kinds) for path in args.detections}
    print(f"{'file':32} {'method':9} {'hit':>6} {'prec':>6} {'recall':>6} {'F1':>6} {'flagged':>7}  hit by kind")
    for path, r in results.items():
        kinds_txt = " ".join(f"{k} {v:.2f}" for k, v in r["hit_rate_by_kind"].items())
        print(f"{path[-32:]:32} {r['method']:9} {r['hit_rate']:6.3f} {r['precision']:6.3f} {r['recall']:6.3f} "
              f"{r['f1']:6.3f} {r['flagged_share']:7.3f}  {kinds_txt}")
    first = next(iter(results.values()))
    print(f"chance precision (share of eligible instruction tokens inside the irrelevant sentence): "
          f"{first['chance_precision']:.3f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
