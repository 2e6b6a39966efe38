"""Score a batch of prepared samples with teacher and student and decide the flags."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from leaf.detect.decision import confounder_scores, flag_percentile, flag_threshold, merge_spans, whitespace_mask
from leaf.detect.prepare import Prepared, View
from leaf.detect.projection import project_scores
from leaf.detect.saliency import embedding_saliency, pad_batch


def _round(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.6g}")


def model_saliency(model: Any, views: list[View], pad_id: int) -> tuple[list[torch.Tensor], list[float]]:
    """Saliency of each view's scored tokens (one pass for the batch) and its loss."""
    ids, att, tgt = pad_batch([v.input_ids for v in views], [v.targets for v in views], pad_id)
    sal, loss = embedding_saliency(model, ids, att, tgt)
    sal = sal.cpu()
    return [sal[b, v.scored] for b, v in enumerate(views)], loss.cpu().tolist()


def decide(
    g_teacher: torch.Tensor,
    g_student: torch.Tensor,
    offsets: list[tuple[int, int]],
    instruction: str,
    rule: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    """Token records and merged spans for one sample (student tokens, instruction characters)."""
    texts = [instruction[s:e] for s, e in offsets]
    eligible = ~whitespace_mask(texts)
    d = confounder_scores(g_teacher, g_student)
    if "percentile" in rule:
        flags = flag_percentile(d, rule["percentile"], eligible, cap=rule.get("cap", 0.5))
    else:
        flags = flag_threshold(d, rule["tau"], eligible)
    tokens = [
        {
            "text": texts[i],
            "start": offsets[i][0],
            "end": offsets[i][1],
            "g_teacher": _round(float(g_teacher[i])),
            "g_student": _round(float(g_student[i])),
            "score": None if d is None else _round(float(d[i])),
            "flag": bool(flags[i]),
        }
        for i in range(len(offsets))
    ]
    return tokens, merge_spans(offsets, flags.tolist(), instruction)


@dataclass
class DetectionScorer:
    teacher: Any
    student: Any
    pad_ids: dict[str, int]
    rule: dict[str, Any]
    projection: str = "mean"

    @classmethod
    def load(cls, cfg: Any, tokenizers: dict[str, Any]) -> DetectionScorer:
        from leaf.models import load_model

        teacher = load_model(
            cfg.teacher,
            dtype=cfg.dtype,
            device=cfg.teacher_device or cfg.device,
            device_map=cfg.teacher_device_map,
        )
        student = load_model(cfg.student, dtype=cfg.dtype, device=cfg.device)
        pads = {name: tok.pad_token_id or 0 for name, tok in tokenizers.items()}
        return cls(teacher, student, pads, cfg.rule, cfg.projection)

    def score_batch(self, batch: list[Prepared]) -> list[dict[str, Any]]:
        g_t, loss_t = model_saliency(self.teacher, [p.views["teacher"] for p in batch], self.pad_ids["teacher"])
        g_s, loss_s = model_saliency(self.student, [p.views["student"] for p in batch], self.pad_ids["student"])
        records = []
        for b, p in enumerate(batch):
            vt, vs = p.views["teacher"], p.views["student"]
            gt = project_scores(vt.offsets, g_t[b], vs.offsets, self.projection)
            tokens, spans = decide(gt, g_s[b], vs.offsets, p.sample.instruction, self.rule)
            records.append(
                {
                    "id": p.sample.id,
                    "level": "instruction",
                    "method": "gradient",
                    "tokens": tokens,
                    "spans": [list(sp) for sp in spans],
                    "loss_teacher": _round(loss_t[b]),
                    "loss_student": _round(loss_s[b]),
                    "truncated": p.cut,
                }
            )
        return records
