"""``leaf prune``: counterfactual samples from samples + detections, with a summary."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaf.data.jsonl import write_atomic
from leaf.config import Summary, make
from leaf.data.counterfactuals import Counterfactual, write_counterfactuals
from leaf.data.detections import Detection, read_detections_of
from leaf.data.records import id_key, load_samples
from leaf.prune.config import PruneConfig
from leaf.prune.counterfactuals import Replacer, build_records

log = logging.getLogger(__name__)


@dataclass
class PruneSummary(Summary):
    samples: int = 0
    detections: int = 0
    samples_with_spans: int = 0
    spans: int = 0
    spans_per_sample: float = 0.0
    spans_per_sample_with_spans: float = 0.0
    instruction_tokens: int = 0
    removed_tokens: int = 0
    removed_token_share: float = 0.0
    records_written: int = 0
    dropped_empty: int = 0
    no_detection: int = 0
    verified_kept: int | None = None
    verified_dropped: int | None = None
    top_pruned: list[tuple[str, int]] = field(default_factory=list)
    #: resample with --resample-from uniform or --draws > 1 only (other runs keep the summary they always had)
    resample_from: str | None = None
    draws: int | None = None
    duplicate_draws: int | None = None

    def line(self) -> str:
        verified = ""
        if self.verified_kept is not None:
            verified = f"; verified: {self.verified_kept} kept, {self.verified_dropped} dropped"
        if self.draws is not None:
            verified = (f"; resample from {self.resample_from}, {self.draws} draw(s) per record, "
                        f"{self.duplicate_draws} duplicate draws skipped") + verified
        return (
            f"{self.detections} detections of {self.samples} samples: {self.samples_with_spans} with spans "
            f"({self.spans_per_sample:.2f} spans per sample), {self.removed_token_share:.1%} of instruction tokens "
            f"flagged; {self.records_written} records written, {self.dropped_empty} dropped (empty), "
            f"{self.no_detection} samples without detection{verified}"
        ) + ("\nmost pruned: " + ", ".join(f"{text!r} x{n}" for text, n in self.top_pruned[:10])
             if self.top_pruned else "")


def prune(config: PruneConfig | None = None, **kwargs: Any) -> PruneSummary:
    """Write counterfactual records; see :class:`PruneConfig`."""
    cfg = make(PruneConfig, config, kwargs, "leaf.prune()")
    samples = {id_key(s.id): s for s in load_samples(cfg.data)}
    detections = read_detections_of(cfg.detections, samples)
    summary = PruneSummary(samples=len(samples), detections=len(detections))
    replacer = _replacer(cfg)
    # New provenance only where an earlier leaf could not have made the run: its outputs stay byte-identical.
    labelled = cfg.intervention == "resample" and (cfg.draws > 1 or cfg.resample_from == "uniform")
    if labelled:
        summary.resample_from, summary.draws, summary.duplicate_draws = cfg.resample_from, cfg.draws, 0
    records: list[Counterfactual] = []
    pruned_strings: Counter[str] = Counter()
    with_spans: set[str] = set()
    for det in detections:
        sample = samples[id_key(det.id)]
        spans = det.field_spans()
        summary.spans += len(spans)
        if spans:
            with_spans.add(id_key(det.id))
        tokens = det.tokens_of("instruction")
        summary.instruction_tokens += len(tokens)
        summary.removed_tokens += sum(1 for t in tokens if t.flag)
        for f, s, e in spans:
            text = (sample.instruction if f == "instruction" else sample.response)[s:e]
            pruned_strings[text] += 1
        recs, dropped = build_records(sample, det, strategy=cfg.strategy, max_spans=cfg.max_spans,
                                      intervention=cfg.intervention, replacer=replacer, draws=cfg.draws,
                                      resample_from=cfg.resample_from if labelled else None)
        records.extend(recs)
        summary.dropped_empty += sum(1 for d in dropped if not d.duplicate)
        if labelled:
            summary.duplicate_draws = (summary.duplicate_draws or 0) + sum(1 for d in dropped if d.duplicate)
    detected = {id_key(d.id) for d in detections}
    summary.no_detection = len(set(samples) - detected)
    summary.samples_with_spans = len(with_spans)
    summary.spans_per_sample = summary.spans / max(len(detections), 1)
    summary.spans_per_sample_with_spans = summary.spans / max(
        sum(1 for d in detections if d.field_spans()), 1)
    summary.removed_token_share = summary.removed_tokens / max(summary.instruction_tokens, 1)
    summary.top_pruned = pruned_strings.most_common(20)

    if cfg.verify:
        from leaf.prune.verify import verify_records

        answer, check = _live_verifier(cfg)
        roles = ("teacher", "student") if cfg.verify_with == "both" else ("teacher",)
        records, dropped_records = verify_records(records, answer, check, roles)
        summary.verified_kept = sum(1 for r in records if r.verified is True)
        summary.verified_dropped = len(dropped_records)

    out = Path(cfg.out)
    provenance = {}
    if cfg.intervention == "resample":
        provenance = {"intervention": "resample", "resample_from": cfg.resample_from, "draws": cfg.draws,
                      "seed": cfg.seed}
    write_counterfactuals(out, records, settings=_provenance(cfg), **provenance)
    summary.records_written = len(records)
    summary_path = out.with_name(out.name + ".summary.json")
    fields = {k: v for k, v in summary.__dict__.items()
              if labelled or k not in ("resample_from", "draws", "duplicate_draws")}
    write_atomic(summary_path, json.dumps(fields, indent=2, ensure_ascii=False) + "\n")
    return summary


def _provenance(cfg: PruneConfig) -> dict[str, Any]:
    """What made these counterfactuals: the detection settings (the detections' sidecar) and the pruning ones."""
    from leaf.data.jsonl import meta_path

    try:
        detection = json.loads(meta_path(cfg.detections).read_text(encoding="utf-8")).get("settings") or {}
    except (OSError, ValueError):
        detection = {}
    prune = {"detections": str(cfg.detections), "strategy": cfg.strategy, "intervention": cfg.intervention,
             "max_spans": cfg.max_spans, "verify": cfg.verify}
    if cfg.verify:
        prune["verify_with"] = cfg.verify_with
    if cfg.intervention == "resample":
        prune.update(resample_from=cfg.resample_from, draws=cfg.draws, seed=cfg.seed)
    return {"detection": detection, "prune": prune}


def _replacer(cfg: PruneConfig) -> Replacer | None:
    """The mask / resample replacement function, or None for deletion."""
    from leaf.prune.interventions import Resampler, default_placeholder, mask_replacements

    if cfg.intervention == "mask":
        placeholder = cfg.mask_token
        if placeholder is None:
            from leaf.models import load_tokenizer

            placeholder = default_placeholder(load_tokenizer(cfg.student) if cfg.student else None)

        def mask(rid: str, sample: Any, det: Detection, tokens: Any) -> Any:
            return mask_replacements({"instruction": sample.instruction, "response": sample.response}, tokens,
                                     placeholder)

        return mask
    if cfg.intervention == "resample":
        from leaf.models import load_model, load_tokenizer

        if cfg.resample_from == "uniform":  # the tokenizer alone: no model is loaded
            path = cfg.student or cfg.teacher
            assert path is not None
            return Resampler(None, load_tokenizer(path), cfg.seed).replacements
        path = cfg.student if cfg.resample_from == "student" else cfg.teacher
        assert path is not None
        tok = load_tokenizer(path)
        resampler = Resampler(load_model(path, dtype=cfg.dtype, device=cfg.device, tokenizer=tok), tok, cfg.seed)
        return resampler.replacements
    return None


def _live_verifier(cfg: PruneConfig) -> tuple[Any, Any]:
    """Generation with the real models and the task's checker.

    Answers are appended to ``OUT.verify-<role>.jsonl`` batch by batch, so an
    interrupted ``--verify`` resumes without generating them again. They are
    keyed by the record id *and* a hash of the instruction answered: a rerun
    after the detections (and so the pruned text) changed generates anew
    instead of judging the new text on old answers.
    """
    import hashlib

    from leaf.checkers import checker_for
    from leaf.generation import generate_to_jsonl
    from leaf.models import load_model, load_tokenizer

    checker = checker_for(cfg.task, answer_pattern=cfg.answer_pattern, code_sandbox=cfg.code_sandbox)
    out = Path(cfg.out)

    def text_key(record: dict[str, Any]) -> str:
        return f"{record['id']}@{hashlib.sha256(record['instruction'].encode('utf-8')).hexdigest()[:16]}"

    def answer(role: str, records: list[dict[str, Any]]) -> list[str]:
        path = cfg.teacher if role == "teacher" else cfg.student
        assert path is not None
        settings = {"model": path, "max_new_tokens": cfg.max_new_tokens, "dtype": cfg.dtype}
        keyed = [{**r, "id": text_key(r)} for r in records]
        # the model is loaded only if some answer is not on disk yet
        got = generate_to_jsonl(None, None, keyed, out.with_name(f"{out.name}.verify-{role}.jsonl"),
                                settings=settings, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                                load=lambda: _model_and_tokenizer(path, cfg))
        return [got[r["id"]] for r in keyed]

    return answer, checker.check


def _model_and_tokenizer(path: str, cfg: Any) -> tuple[Any, Any]:
    from leaf.models import load_model, load_tokenizer

    tok = load_tokenizer(path)
    return load_model(path, dtype=cfg.dtype, device=cfg.device, tokenizer=tok), tok
