"""``leaf detect``: Stage 1 end to end, from a samples file to ``detections.jsonl``.

Orchestration only: validation, rendering (:mod:`.prepare`), saliency
(:mod:`.saliency`), projection (:mod:`.projection`) and the decision rule
(:mod:`.decision`) live in their own modules. Output schema: docs/detect.md.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaf.data.jsonl import write_atomic
from leaf.batching import halving, length_batches
from leaf.config import Summary, make, to_dict
from leaf.data import detections as detection_schema
from leaf.data.jsonl import ResumableJsonl, dumps
from leaf.data.records import Sample, load_samples, select_samples, source_bytes
from leaf.detect.config import DetectConfig
from leaf.detect.prepare import Prepared, Skipped, prepare
from leaf.detect.segments import segment_response

log = logging.getLogger(__name__)


@dataclass
class DetectSummary(Summary):
    out: Path
    samples: int = 0
    written: int = 0
    resumed: int = 0
    skipped: list[tuple[Any, str]] = field(default_factory=list)
    with_spans: int = 0
    flagged_tokens: int = 0
    scored_tokens: int = 0
    uncovered: int = 0  #: units with characters some model's tokens do not cover (OUT.uncovered.jsonl)

    def line(self) -> str:
        share = self.flagged_tokens / self.scored_tokens if self.scored_tokens else 0.0
        gaps = f"; {self.uncovered} with characters a tokenizer does not cover" if self.uncovered else ""
        return (
            f"{self.samples} samples: {self.written} written, {self.resumed} already done, "
            f"{len(self.skipped)} skipped{gaps}; {self.with_spans} with spans; "
            f"{self.flagged_tokens}/{self.scored_tokens} tokens flagged ({share:.1%}) -> {self.out}"
        )


def _file_hash(path: Path) -> str:
    return hashlib.sha256(source_bytes(path)).hexdigest()[:16]


def _settings(cfg: DetectConfig) -> dict[str, Any]:
    """What shapes the numbers: a resumed run must match these exactly."""
    keep = ("teacher", "student", "select", "batch_size", "max_length", "truncation", "dtype", "projection",
            "level", "method")
    from leaf.models import resolve_dtype

    s = {k: to_dict(cfg)[k] for k in keep}
    s["dtype"] = resolve_dtype(cfg.dtype, cfg.device)  # what ran, so a resume elsewhere cannot mix dtypes
    if cfg.level == "response":
        s["segments"] = cfg.segments
    if cfg.method == "random":
        s["seed"] = cfg.seed
    if cfg.render != "auto":  # absent when auto, so files written before the option existed still resume
        s["render"] = cfg.render
    if cfg.max_tokens_per_batch is not None:  # the batches' composition (absent: as before the option existed)
        s["max_tokens_per_batch"] = cfg.max_tokens_per_batch
    s.update(cfg.rule, data_sha256=_file_hash(cfg.data))
    if cfg.special_tokens_in_text == "escape":  # other token ids: not resumable from a run without it
        s["special_tokens_in_text"] = "escape"
    return s


def units(sample: Sample, tokenizers: dict[str, Any], cfg: DetectConfig) -> list[Prepared | Skipped]:
    """What is scored for one sample: itself, or one unit per later response segment."""
    fit = {"max_length": cfg.max_length, "truncation": cfg.truncation, "render_mode": cfg.render,
           "escape_special": cfg.special_tokens_in_text == "escape"}
    if cfg.level == "instruction":
        return [prepare(sample, tokenizers, **fit)]
    segs = segment_response(sample.response, cfg.segments)
    if len(segs) < 2:
        return [Skipped(sample, "the response has no segment boundary")]
    return [
        prepare(sample, tokenizers, loss_start=start, loss_end=end, key=f"{sample.id}@{j}", **fit)
        for j, (start, end) in enumerate(segs[1:], start=1)
    ]


def detect(config: DetectConfig | None = None, **kwargs: Any) -> DetectSummary:
    """Run confounding-token detection; see :class:`DetectConfig` for the options.

    ``leaf.detect(teacher=..., student=..., data=..., out=...)`` and
    ``leaf.detect(DetectConfig(...))`` are equivalent.
    """
    cfg = make(DetectConfig, config, kwargs, "leaf.detect()")
    samples = select_samples(load_samples(cfg.data), cfg.select)  # fails before any model is loaded
    if not samples:
        log.warning("%s: --select %s leaves no sample to analyse (is the data labelled as you think?)", cfg.data,
                    cfg.select)

    from leaf.models import load_tokenizer

    tokenizers = {"teacher": load_tokenizer(cfg.teacher), "student": load_tokenizer(cfg.student)}
    from leaf.data.records import record_locations
    from leaf.data.special import apply_policy, scan

    apply_policy(cfg.special_tokens_in_text, scan(samples, tokenizers, lambda: record_locations(cfg.data)))
    prepared: list[Prepared] = []
    summary = DetectSummary(out=Path(cfg.out), samples=len(samples))
    for s in samples:
        for p in units(s, tokenizers, cfg):
            if isinstance(p, Skipped):
                log.warning("sample %r skipped: %s", s.id, p.reason)
                summary.skipped.append((s.id, p.reason))
            else:
                prepared.append(p)
    uncovered = [p for p in prepared if any(p.uncovered.values())]
    summary.uncovered = len(uncovered)

    key = "key" if cfg.level == "response" else "id"
    from leaf.distributed import check_parts, done_keys, rank_and_world, remove_parts

    rank, world = rank_and_world()
    settings = _settings(cfg)
    check_parts(cfg.out, world, overwrite=cfg.overwrite)  # unmerged parts of another process count
    schema = {"schema": detection_schema.SCHEMA, "schema_version": detection_schema.SCHEMA_VERSION}
    # Fixed batch composition (by length, then input order; bounded in count and padded tokens) so a resumed
    # run recomputes a half-written batch with the same neighbours and the same numbers.
    lengths = [max(len(v.input_ids) for v in p.views.values()) for p in prepared]
    batches = [[prepared[i] for i in group]
               for group in length_batches(lengths, cfg.batch_size, cfg.max_tokens_per_batch)]
    if world > 1:
        return _detect_sharded(cfg, tokenizers, summary, prepared, batches, uncovered, settings, key, schema,
                               done_keys(cfg.out, settings, key=key, overwrite=cfg.overwrite), rank, world)
    writer = ResumableJsonl(cfg.out, settings, key=key, overwrite=cfg.overwrite, **schema)
    todo = [b for b in batches if any(p.key not in writer.done for p in b)]
    summary.resumed = sum(1 for p in prepared if p.key in writer.done)
    _write_skipped(cfg.out, summary.skipped)
    _write_uncovered(cfg.out, uncovered, with_key=cfg.level == "response")
    if not todo:
        writer.commit()
        _warn_if_all_skipped(cfg, summary)
        return summary
    _score(cfg, tokenizers, todo, writer, summary)
    writer.commit()
    if cfg.overwrite:
        remove_parts(cfg.out)  # unmerged parts of an earlier several-process run are now stale
    _write_skipped(cfg.out, summary.skipped)
    _warn_if_all_skipped(cfg, summary)
    return summary


def _score(cfg: DetectConfig, tokenizers: dict[str, Any], todo: list[list[Prepared]], writer: ResumableJsonl,
           summary: DetectSummary, lockstep: tuple[int, list[Prepared]] | None = None) -> None:
    """Score the batches ``todo`` and append their detections to ``writer``, counting into ``summary``.

    ``lockstep = (steps, filler)`` (sharded models): run exactly ``steps`` batches, ``filler`` (results
    discarded) after ``todo`` runs out, and no out-of-memory halving, so every process makes the same
    collective calls.
    """
    from leaf.detect.scoring import DetectionScorer

    scorer = DetectionScorer.load(cfg, tokenizers)
    from tqdm.auto import tqdm

    def skip(p: Prepared, reason: str) -> None:
        log.warning("sample %r skipped: %s", p.sample.id, reason)
        summary.skipped.append((p.sample.id, reason))

    bar = tqdm(total=sum(len(b) for b in todo), desc="detect", unit="sample", disable=not cfg.progress)
    steps, filler = lockstep or (len(todo), [])
    for i in range(steps):
        if i >= len(todo):
            scorer.score_batch(filler)  # padding: another process still has a batch to score
            continue
        batch = todo[i]
        if lockstep:
            scored: list[Any] = scorer.score_batch(batch)
        else:
            scored = halving(batch, scorer.score_batch, skip)  # halves a batch that runs out of memory
        detections = [d for d in scored if d is not None and d.unit_key not in writer.done]
        for det in detections:
            summary.scored_tokens += len(det.tokens)
            summary.flagged_tokens += sum(t.flag for t in det.tokens)
            summary.with_spans += bool(det.field_spans())
        summary.written += writer.write_batch([d.to_json() for d in detections])
        bar.update(len(batch))
    bar.close()


def _detect_sharded(cfg: DetectConfig, tokenizers: dict[str, Any], summary: DetectSummary,
                    prepared: list[Prepared], batches: list[list[Prepared]], uncovered: list[Prepared],
                    settings: dict[str, Any], key: str, schema: dict[str, Any], out_done: set[str], rank: int,
                    world: int) -> DetectSummary:
    """One of ``world`` processes: batch ``k`` of what ``OUT`` lacks goes to rank ``k % world``, into its part
    ``OUT.part-RRRRR-of-NNNNN`` (resumable); rank 0 merges the parts into ``OUT`` in a single run's order.

    With ``--shard-models fsdp`` the models are sharded over the processes (:mod:`leaf.sharding`): the split,
    the parts and the merge are the same, and a process with fewer batches left runs padding batches."""
    from leaf.distributed import barrier, gather, merge_parts, part_path, remove_parts, shard

    pending = [b for b in batches if any(p.key not in out_done for p in b)]
    before = len(summary.skipped)  # preparation's skips: the same on every rank
    summary.resumed = sum(1 for p in prepared if p.key in out_done)
    if not pending:  # OUT holds everything (a finished run, whatever its number of processes): nothing to do
        if rank == 0:
            remove_parts(cfg.out)
            _write_skipped(cfg.out, summary.skipped)
            _write_uncovered(cfg.out, uncovered, with_key=cfg.level == "response")
        return summary
    writer = ResumableJsonl(part_path(cfg.out, rank, world), settings, key=key, overwrite=cfg.overwrite, **schema)
    mine = shard(pending, rank, world)
    in_part = sum(1 for b in mine for p in b if p.key in writer.done and p.key not in out_done)
    writer.done |= out_done  # what OUT holds is not written again
    todo = [b for b in mine if any(p.key not in writer.done for p in b)]
    if cfg.shard_models == "fsdp":  # every process runs as many batches as the busiest one
        from leaf.sharding import lockstep_steps

        steps = lockstep_steps(len(todo))
        if steps:
            _score(cfg, tokenizers, todo, writer, summary, lockstep=(steps, pending[0]))
    elif todo:
        _score(cfg, tokenizers, todo, writer, summary)
    writer.commit()
    summary.resumed += in_part
    counts = gather((summary.written, in_part, summary.with_spans, summary.flagged_tokens, summary.scored_tokens,
                     summary.skipped[before:]))
    barrier()
    if rank == 0:
        merge_parts(cfg.out, world, settings, order=[p.key for b in batches for p in b], key=key,
                    overwrite=cfg.overwrite, **schema)
        summary.written = sum(c[0] for c in counts)
        summary.resumed = sum(1 for p in prepared if p.key in out_done) + sum(c[1] for c in counts)
        summary.with_spans = sum(c[2] for c in counts)
        summary.flagged_tokens = sum(c[3] for c in counts)
        summary.scored_tokens = sum(c[4] for c in counts)
        summary.skipped = summary.skipped[:before] + [s for c in counts for s in c[5]]
        _write_skipped(cfg.out, summary.skipped)
        _write_uncovered(cfg.out, uncovered, with_key=cfg.level == "response")
        _warn_if_all_skipped(cfg, summary)
    barrier()  # OUT is in place when any rank returns
    return summary


def _warn_if_all_skipped(cfg: DetectConfig, summary: DetectSummary) -> None:
    if summary.samples and len({sid for sid, _ in summary.skipped}) == summary.samples:
        log.warning("every sample was skipped (reasons in %s.skipped.jsonl)", Path(cfg.out).name)


def _write_skipped(out: Path, skipped: list[tuple[Any, str]]) -> None:
    path = Path(out).with_name(Path(out).name + ".skipped.jsonl")
    if skipped:
        write_atomic(path, "".join(dumps({"id": i, "reason": r}) + "\n" for i, r in skipped))
    else:
        path.unlink(missing_ok=True)


def _write_uncovered(out: Path, units: list[Prepared], with_key: bool) -> None:
    """``OUT.uncovered.jsonl``: per unit, characters of its scored text that a model's tokens do not cover."""
    path = Path(out).with_name(Path(out).name + ".uncovered.jsonl")
    lines = []
    for p in units:
        rec: dict[str, Any] = {"id": p.sample.id}
        if with_key:
            rec["key"] = p.key
        rec["uncovered"] = p.uncovered
        rec["ranges"] = {name: [list(r) for r in v.uncovered] for name, v in p.views.items() if v.uncovered}
        lines.append(dumps(rec) + "\n")
    if lines:
        write_atomic(path, "".join(lines))
    else:
        path.unlink(missing_ok=True)


__all__ = ["DetectConfig", "DetectSummary", "detect"]
