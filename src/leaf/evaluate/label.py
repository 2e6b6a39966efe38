"""``leaf label``: mark which samples the teacher and the student get right.

For every sample, the teacher and the student each answer the instruction
(:func:`leaf.generation.generate`, greedy by default) and the task's
checker judges the answer. The output is the input records with four fields
added (or replaced):

* ``teacher_generation``, ``student_generation`` -- the answers;
* ``teacher_correct``, ``student_correct`` -- the checker's verdicts,

so that ``leaf detect --select student-wrong`` can pick the samples the paper
analyses (teacher right, student wrong).

One model is in memory at a time: the teacher's answers go to
``<out>.generations/teacher.jsonl``, then the student's to ``.../student.jsonl``,
each resumable; the labelled file is written last (also resumable, keyed by id).
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leaf.config import Summary, make
from leaf.evaluate.config import LabelConfig
from leaf.data.records import DataError, Sample, id_key, load_samples, record_locations

log = logging.getLogger(__name__)


def _ungradable(samples: list[Sample], task: str, where: Path, pattern: str | None = None) -> dict[str, str]:
    """``{id: problem}`` for the samples the task's checker cannot judge (no gold answer / tests)."""
    from leaf.checkers.exact import ExactChecker
    from leaf.checkers.math import MathChecker

    problems = {}
    places = record_locations(where)
    for s in samples:
        at = places.get(id_key(s.id), f"{where}: sample {s.id!r}")
        if task == "code":
            if not (s.meta or {}).get("tests"):
                problems[id_key(s.id)] = f"{at}: field 'meta.tests': missing (the code checker needs it)"
        elif task == "math":
            if MathChecker().gold(s) is None:
                problems[id_key(s.id)] = f"{at}: field 'answer': missing (and no marked answer in 'response')"
        elif task == "exact" and pattern is not None:
            if ExactChecker(pattern).gold(s) is None:
                problems[id_key(s.id)] = f"{at}: field 'answer': missing (and no match of --answer-pattern in 'response')"
        elif s.answer is None:
            problems[id_key(s.id)] = f"{at}: field 'answer': missing"
    return problems


@dataclass
class LabelSummary(Summary):
    out: Path
    samples: int
    teacher_correct: int
    student_correct: int
    student_wrong_teacher_right: int

    def line(self) -> str:
        n = self.samples
        return (f"teacher right {self.teacher_correct}/{n}, student right {self.student_correct}/{n}, "
                f"teacher right and student wrong {self.student_wrong_teacher_right}\nwrote {self.out}")


def label(config: LabelConfig | None = None, **kwargs: Any) -> LabelSummary:
    """Label every sample of ``config.data`` into ``config.out``; return the counts."""
    from leaf.data.jsonl import ResumableJsonl
    from leaf.checkers import checker_for
    from leaf.generation import decoding_options, generate_to_jsonl, load_generator

    cfg = make(LabelConfig, config, kwargs, "leaf.label()")
    samples = load_samples(cfg.data)
    problems = _ungradable(samples, cfg.task, cfg.data, cfg.answer_pattern)
    if problems and not cfg.skip_ungradable:
        raise DataError([f"{p} (--skip-ungradable leaves such samples out)" for p in problems.values()])
    if problems:
        samples = [s for s in samples if id_key(s.id) not in problems]
        log.warning("%s: left out %d sample(s) without a gold answer", cfg.data, len(problems))
        if not samples:
            raise DataError([f"{cfg.data}: no sample has a gold answer for the {cfg.task} checker"])
    from leaf.data.records import record_locations
    from leaf.data.special import apply_policy, scan
    from leaf.models import load_tokenizer

    tokenizers = {"teacher": load_tokenizer(cfg.teacher), "student": load_tokenizer(cfg.student)}
    apply_policy(cfg.special_tokens_in_text, scan(samples, tokenizers, lambda: record_locations(cfg.data),
                                                  fields=("instruction",)))
    decoding = {"max_new_tokens": cfg.max_new_tokens, **decoding_options(cfg)}
    from leaf.distributed import barrier, done_keys, rank_and_world

    rank, world = rank_and_world()
    out_settings = {**decoding, "teacher": cfg.teacher, "student": cfg.student, "task": cfg.task, "data": str(cfg.data)}
    if rank == 0:
        writer = ResumableJsonl(cfg.out, out_settings, overwrite=cfg.overwrite)
        done = writer.done
    else:  # several processes: only process 0 writes the labelled file; the others read what it holds
        done = done_keys(cfg.out, out_settings, overwrite=cfg.overwrite)
    if world > 1:
        barrier()  # everyone has read the labelled file before process 0 touches it
    todo = [s for s in samples if id_key(s.id) not in done]
    gens: dict[str, dict[str, str]] = {}
    folder = cfg.out.parent / f"{cfg.out.name}.generations"
    for role in ("teacher", "student"):
        if not todo:
            break
        name = getattr(cfg, role)
        model, tok = load_generator(name, backend=cfg.backend, dtype=cfg.dtype, device=cfg.device)
        gens[role] = generate_to_jsonl(
            model,
            tok,
            [{"id": s.id, "instruction": s.instruction} for s in todo],
            folder / f"{role}.jsonl",
            settings={**decoding, "model": name},
            overwrite=cfg.overwrite,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.batch_size,
            max_tokens_per_batch=cfg.max_tokens_per_batch,
            progress=True,
            **decoding_options(cfg),
        )
        del model
        gc.collect()
    if rank != 0:  # each process generated its share of the prompts, merged by process 0, which labels
        barrier()
        return _counts(cfg.out, samples)
    checker = checker_for(cfg.task, code_timeout=cfg.code_timeout, answer_pattern=cfg.answer_pattern,
                          code_sandbox=cfg.code_sandbox)
    for s in todo:
        missing = [role for role in ("teacher", "student") if id_key(s.id) not in gens[role]]
        if missing:  # generation ran out of memory on this prompt even alone: leave it unlabelled, say so
            log.warning("sample %r left unlabelled: no %s generation", s.id, " or ".join(missing))
            continue
        rec = s.to_json()
        for role in ("teacher", "student"):
            text = gens[role][id_key(s.id)]
            rec[f"{role}_generation"] = text
            rec[f"{role}_correct"] = bool(checker.check(text, s))
        writer.write_batch([rec])
    writer.commit()
    if world > 1:
        barrier()
    return _counts(cfg.out, samples)


def _counts(out: Path, samples: list[Sample]) -> LabelSummary:
    from leaf.data.jsonl import read_jsonl

    by_id = {id_key(r["id"]): r for r in read_jsonl(out)}
    labelled = [by_id[id_key(s.id)] for s in samples if id_key(s.id) in by_id]
    n = len(labelled)
    t = sum(r["teacher_correct"] for r in labelled)
    st = sum(r["student_correct"] for r in labelled)
    sw = sum(r["teacher_correct"] and not r["student_correct"] for r in labelled)
    log.info("teacher right %d/%d, student right %d/%d, teacher-right & student-wrong %d", t, n, st, n, sw)
    return LabelSummary(out, n, t, st, sw)
