"""Score a batch of prepared samples with teacher and student and decide the flags."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

from leaf.data.detections import Detection, TokenScore
from leaf.detect.decision import (
    PERCENTILE_CAP,
    confounder_scores,
    flag_percentile,
    flag_threshold,
    merge_spans,
    whitespace_mask,
)
from leaf.detect.methods import NEEDS_SURPRISAL, MethodContext, apply_method
from leaf.data.views import View
from leaf.detect.prepare import Prepared
from leaf.detect.projection import project_scores
from leaf.detect.saliency import embedding_saliency, pack_batch, pad_batch, token_surprisal


def _launched() -> bool:
    from leaf.distributed import rank_and_world

    return rank_and_world()[1] > 1


def _round(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.6g}")


def _round_missing(x: float) -> float | None:
    """A teacher score or ``d`` that may be missing (NaN: no teacher token here) -> ``None``."""
    return None if x != x else _round(x)


def model_saliency(model: Any, views: list[View], pad_id: int, gradient_checkpointing: bool = False,
                   packed: bool = False) -> tuple[list[torch.Tensor], list[float]]:
    """Saliency of each view's scored tokens (one pass for the batch; ``packed``: the views end to end in one
    row, :func:`pack_batch`) and its loss."""
    seqs, targets = [v.input_ids for v in views], [v.targets for v in views]
    if packed:
        ids, att, tgt, rows, starts = pack_batch(seqs, targets, pad_id)
        sal, loss = embedding_saliency(model, ids, att, tgt, gradient_checkpointing=gradient_checkpointing, packed=rows)
        sal = sal.cpu()[0]
        return [sal[[start + t for t in v.scored]] for start, v in zip(starts, views)], loss.cpu().tolist()
    ids, att, tgt = pad_batch(seqs, targets, pad_id)
    sal, loss = embedding_saliency(model, ids, att, tgt, gradient_checkpointing=gradient_checkpointing)
    sal = sal.cpu()
    return [sal[b, v.scored] for b, v in enumerate(views)], loss.cpu().tolist()


def model_surprisal(model: Any, views: list[View], pad_id: int, packed: bool = False) -> list[torch.Tensor]:
    """Surprisal of each view's scored tokens (one no-grad pass for the batch, packed or padded)."""
    seqs, scored = [v.input_ids for v in views], [v.scored for v in views]
    if packed:
        ids, att, pos, rows, starts = pack_batch(seqs, scored, pad_id)
        s = token_surprisal(model, ids, att, pos, packed=rows)[0]
        return [s[[start + t for t in v.scored]] for start, v in zip(starts, views)]
    ids, att, pos = pad_batch(seqs, scored, pad_id)
    s = token_surprisal(model, ids, att, pos)
    return [s[b, v.scored] for b, v in enumerate(views)]


def gradient_flags(scores: torch.Tensor | None, eligible: torch.Tensor, rule: dict[str, Any]) -> torch.Tensor:
    if "percentile" in rule:
        return flag_percentile(scores, rule["percentile"], eligible, cap=rule.get("cap", PERCENTILE_CAP))
    return flag_threshold(scores, rule["tau"], eligible)


def field_spans(view: View, flags: torch.Tensor, texts: dict[str, str]) -> dict[str, list[list[int]]]:
    """Merged spans per field (a run of flagged tokens never crosses from instruction to response)."""
    out: dict[str, list[list[int]]] = {}
    for name, text in texts.items():
        idx = [i for i in range(len(view.offsets)) if view.field(i) == name]
        spans = merge_spans([view.offsets[i] for i in idx], [bool(flags[i]) for i in idx], text)
        out[name] = [list(sp) for sp in spans]
    return out


@dataclass
class DetectionScorer:
    teacher: Any
    student: Any
    pad_ids: dict[str, int]
    rule: dict[str, Any]
    projection: str = "mean"
    method: str = "gradient"
    seed: int = 0
    gradient_checkpointing: bool = False
    names: dict[str, str] | None = None  #: model folders, named when a model gives non-finite numbers
    packing: str = "auto"  #: --packing: each model's batch as one packed row (auto: with a variable-length kernel)

    @classmethod
    def load(cls, cfg: Any, tokenizers: dict[str, Any]) -> DetectionScorer:
        from leaf.models import load_model

        if getattr(cfg, "shard_models", "none") == "fsdp" and _launched():
            return cls._load_sharded(cfg, tokenizers)
        teacher = load_model(
            cfg.teacher,
            dtype=cfg.dtype,
            device=cfg.teacher_device or cfg.device,
            device_map=cfg.teacher_device_map,
            max_memory=cfg.max_memory,
            what="teacher",
            hint="use --teacher-device-map auto (with --max-memory) or a smaller --dtype",
            tokenizer=tokenizers.get("teacher"),
            attn_implementation=cfg.attention,
        )
        student = load_model(cfg.student, dtype=cfg.dtype, device=cfg.device, what="student",
                             tokenizer=tokenizers.get("student"), attn_implementation=cfg.attention)
        pads = {name: tok.pad_token_id or 0 for name, tok in tokenizers.items()}
        return cls(teacher, student, pads, cfg.rule, cfg.projection, cfg.method, cfg.seed, cfg.gradient_checkpointing,
                   {"teacher": cfg.teacher, "student": cfg.student}, cfg.packing)

    @classmethod
    def _load_sharded(cls, cfg: Any, tokenizers: dict[str, Any]) -> DetectionScorer:
        """Teacher and student loaded whole on this process's CPU, then sharded over every process (FSDP2)."""
        from leaf.sharding import load_sharded

        models = {role: load_sharded(getattr(cfg, role), dtype=cfg.dtype, device=cfg.device, what=role,
                                     tokenizer=tokenizers.get(role), attn_implementation=cfg.attention)
                  for role in ("teacher", "student")}
        pads = {name: tok.pad_token_id or 0 for name, tok in tokenizers.items()}
        return cls(models["teacher"], models["student"], pads, cfg.rule, cfg.projection, cfg.method, cfg.seed,
                   cfg.gradient_checkpointing, {"teacher": cfg.teacher, "student": cfg.student}, cfg.packing)

    @functools.cached_property
    def packs(self) -> dict[str, bool]:
        """Whether each model's batches are packed (``--packing``), decided once for the run."""
        from leaf.models import use_packing

        return {role: use_packing(self.packing, getattr(self, role)) for role in ("teacher", "student")}

    def score_batch(self, batch: list[Prepared]) -> list[Detection]:
        ckpt = self.gradient_checkpointing
        packs = self.packs
        g_t, loss_t = model_saliency(self.teacher, [p.views["teacher"] for p in batch], self.pad_ids["teacher"], ckpt,
                                     packs["teacher"])
        g_s, loss_s = model_saliency(self.student, [p.views["student"] for p in batch], self.pad_ids["student"], ckpt,
                                     packs["student"])
        self._check_finite(batch, {"teacher": (g_t, loss_t), "student": (g_s, loss_s)})
        surprisal = None
        if self.method in NEEDS_SURPRISAL:
            surprisal = model_surprisal(self.student, [p.views["student"] for p in batch], self.pad_ids["student"],
                                        packs["student"])
        return [
            self._record(p, g_t[b], g_s[b], loss_t[b], loss_s[b], None if surprisal is None else surprisal[b])
            for b, p in enumerate(batch)
        ]

    def _check_finite(self, batch: list[Prepared], got: dict[str, tuple[list[torch.Tensor], list[float]]]) -> None:
        """A NaN / infinite loss or saliency stops the run naming the sample and the model (nothing of it is written)."""
        import math

        from leaf.models import NonFiniteError

        for role, (sal, losses) in got.items():
            for p, g, loss in zip(batch, sal, losses):
                what = "loss" if not math.isfinite(loss) else "saliency" if not bool(torch.isfinite(g).all()) else None
                if what:
                    folder = (self.names or {}).get(role, "")
                    raise NonFiniteError(
                        f"sample {p.key or p.sample.id}: the {role}'s {what} is not finite"
                        f"{f' ({folder})' if folder else ''}; its forward pass overflowed (check --dtype); "
                        "the detections written so far are kept and a rerun resumes after them"
                    )

    def _record(self, p: Prepared, g_t: torch.Tensor, g_s: torch.Tensor, loss_t: float, loss_s: float,
                surprisal: torch.Tensor | None) -> Detection:
        vt, vs = p.views["teacher"], p.views["student"]
        # Tokens of both fields share one character axis for the projection: response
        # offsets are shifted past the instruction so the two never overlap.
        shift = len(p.sample.instruction) + 1

        def axis(v: View) -> list[tuple[int, int]]:
            return [(s + shift, e + shift) if v.field(i) == "response" else (s, e) for i, (s, e) in enumerate(v.offsets)]

        gt = project_scores(axis(vt), g_t, axis(vs), self.projection)
        # NaN after projection = no teacher token over this student token (a cross-tokenizer
        # gap): missing, never flagged. NaN in the teacher's own scores stays degenerate.
        missing = torch.isnan(gt) if bool(torch.isfinite(g_t).all()) else torch.zeros_like(gt, dtype=torch.bool)
        texts = {"instruction": p.sample.instruction, "response": p.sample.response}
        token_texts = [texts[vs.field(i)][s:e] for i, (s, e) in enumerate(vs.offsets)]
        eligible = ~whitespace_mask(token_texts) & ~missing
        d = confounder_scores(gt, g_s, missing)
        ctx = MethodContext(p.key, gradient_flags(d, eligible, self.rule), eligible, surprisal, self.seed)
        flags = apply_method(self.method, ctx)
        response_level = p.loss_start > 0
        tokens = [
            TokenScore(
                text=token_texts[i], start=s, end=e, g_teacher=_round_missing(float(gt[i])), g_student=_round(float(g_s[i])),
                score=None if d is None else _round_missing(float(d[i])), flag=bool(flags[i]), field=vs.field(i),
                surprisal=None if surprisal is None else _round(float(surprisal[i])),
            )
            for i, (s, e) in enumerate(vs.offsets)
        ]
        spans = field_spans(vs, flags, texts if response_level else {"instruction": texts["instruction"]})
        det = Detection(
            id=p.sample.id, level="response" if response_level else "instruction", method=self.method,
            tokens=tokens, spans=[tuple(sp) for sp in spans["instruction"]],  # type: ignore[misc]
            loss_teacher=_round(loss_t), loss_student=_round(loss_s), truncated=p.cut,
        )
        if response_level:
            det.key = p.key
            det.response_spans = [tuple(sp) for sp in spans["response"]]  # type: ignore[misc]
            det.segment = int(p.key.rsplit("@", 1)[1])
            det.loss_start, det.loss_end = p.loss_start, p.loss_end
        return det
