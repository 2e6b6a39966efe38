"""``distill()``: one whole distillation run, from the config to the final model in ``--out``.

:func:`build_trainer` loads the data (training and held-out examples), the models or the teacher cache, and
returns a ready :class:`~leaf.distill.trainer.DistillTrainer`; :func:`distill` resumes or starts it, trains,
evaluates, saves the final model and writes the model card.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from leaf.config import Summary, make
from leaf.data.jsonl import write_atomic
from leaf.distill.arguments import training_arguments
from leaf.distill.callbacks import QuietProgress, metrics_callback
from leaf.distill.config import CONFIG_FILE, DistillConfig, public_settings
from leaf.distill.heldout import HELDOUT_FILE, eval_split
from leaf.distill.resume import resume_point
from leaf.distill.trainer import DistillTrainer

log = logging.getLogger(__name__)


@dataclass
class DistillSummary(Summary):
    out: Path
    steps: int
    examples: int
    counterfactual_examples: int
    lambda_used: float
    resumed: bool
    eval_loss: float | None = None  #: the final evaluation's loss (None without an evaluation set)
    hub_repo: str | None = None  #: the repository pushed to (--push-to-hub)
    aligned_1to1: float | None = None  #: cross-tokenizer runs: share of student loss tokens in 1:1 groups
    student_responses: int | None = None  #: on-policy runs: responses the student generated (this process)
    generation_share: float | None = None  #: on-policy runs: share of the training time spent generating

    def line(self) -> str:
        resumed = " (resumed)" if self.resumed else ""
        evaluated = f"; eval loss {self.eval_loss:.4f}" if self.eval_loss is not None else ""
        aligned = (f"; cross-tokenizer: {100 * self.aligned_1to1:.1f} % of loss tokens aligned 1:1, "
                   f"{100 * (1 - self.aligned_1to1):.1f} % in merged groups") if self.aligned_1to1 is not None else ""
        generated = (f"; {self.student_responses} student responses, generation "
                     f"{100 * (self.generation_share or 0):.0f} % of the training time"
                     ) if self.student_responses is not None else ""
        pushed = f"; pushed to https://huggingface.co/{self.hub_repo}" if self.hub_repo else ""
        return (f"trained {self.steps} steps{resumed} on {self.examples} examples "
                f"({self.counterfactual_examples} counterfactual, lambda {self.lambda_used}){evaluated}{aligned}"
                f"{generated}; "
                f"wrote {self.out}{pushed}")


def distill(config: DistillConfig | None = None, **kwargs: Any) -> DistillSummary:
    """Distil ``config.teacher`` (or its cache) into ``config.student`` in ``config.out``.

    Takes a :class:`DistillConfig` or its fields as keyword arguments.
    """
    config = make(DistillConfig, config, kwargs, "leaf.distill()")
    out = Path(config.out)
    resume = resume_point(config)
    trainer = build_trainer(config)
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    final_eval = None
    if trainer.eval_dataset is not None:
        final_eval = last_evaluation(trainer.state.log_history, trainer.state.global_step)
        if final_eval is None:  # the last step was not an --eval-steps multiple: evaluate the final model
            final_eval = trainer.evaluate()
        trainer.save_metrics("eval", final_eval)  # eval_results.json (main process)
    trainer.save_state()  # trainer_state.json: every logged step and evaluation (main process)
    _save_final(trainer, trainer.processing_class, out, lora=config.lora_r > 0)
    run = json.loads((out / CONFIG_FILE).read_text())["_run"] if (out / CONFIG_FILE).exists() else {}
    repo = None
    if trainer.is_world_process_zero():
        from leaf.distill.card import push_to_hub, write_card

        write_card(config, out)  # always: README.md of the output folder
        if config.push_to_hub:
            repo = push_to_hub(config, out)
    trainer.accelerator.wait_for_everyone()
    return DistillSummary(out, int(trainer.state.global_step), run.get("examples", 0),
                          run.get("counterfactual_examples", 0), run.get("lambda_used", config.lam), resume,
                          None if final_eval is None else float(final_eval["eval_loss"]), repo,
                          (run.get("cross_tokenizer") or {}).get("aligned_1to1"),
                          *_generation(trainer.on_policy, result.metrics.get("train_runtime")))


def _generation(on_policy: Any, runtime: float | None) -> tuple[int | None, float | None]:
    """(responses generated, share of the training time) of an on-policy run; (None, None) otherwise."""
    if on_policy is None:
        return None, None
    return on_policy.total_generated, on_policy.total_seconds / max(runtime or 0.0, 1e-9)


def last_evaluation(log_history: list[dict[str, Any]], step: int) -> dict[str, Any] | None:
    """The evaluation logged at ``step`` (``eval_*`` metrics), or None."""
    for entry in reversed(log_history):
        if "eval_loss" in entry and entry.get("step") == step:
            return {k: v for k, v in entry.items() if k.startswith("eval_")}
    return None


def build_trainer(config: DistillConfig, callbacks: list[Any] | None = None) -> Any:
    """Load data, models (or the cache) and return a ready :class:`DistillTrainer`; writes leaf_config.json."""

    from leaf.distill.data import (DistillCollator, ExampleDataset, check_tokenizers, load_examples, model_vocab_size,
                                   shared_vocab_size)
    from leaf.models import load_model, load_tokenizer, use_packing

    config.check_trackers()
    out = Path(config.out)
    args = training_arguments(config)
    tokenizer = load_tokenizer(config.student)
    cache = None
    if config.teacher_cache is not None:
        from leaf.distill.cache import TeacherCache

        cache = TeacherCache.open(config.teacher_cache)
    teacher_tokenizer, aligned = cross_tokenizer_plan(config, tokenizer, cache)
    all_examples = load_examples(tokenizer, config.data, config.counterfactuals, include_eos=config.include_eos,
                                 max_length=config.max_length, special_tokens=config.special_tokens_in_text,
                                 teacher_tokenizer=teacher_tokenizer,
                                 student_prompt=config.student_prompt if config.student_responses > 0 else None)
    examples, eval_examples, eval_ids, heldout = eval_split(config, tokenizer, all_examples, teacher_tokenizer)
    held = set(eval_ids)
    dataset = ExampleDataset(examples, [i for i in range(len(all_examples)) if i not in held])
    eval_dataset = ExampleDataset(eval_examples, eval_ids) if eval_examples else None
    padder = DistillCollator(tokenizer.pad_token_id, config.pad_to_multiple_of,
                             None if teacher_tokenizer is None else teacher_tokenizer.pad_token_id)
    collator: Any = padder

    teacher = None
    teacher_vocab = None
    if cache is not None:
        from leaf.distill.cache import CachedCollator

        cache.check(tokenizer, all_examples, config.temperature, config.data, config.counterfactuals)
        collator = CachedCollator(collator, cache, ExampleDataset(all_examples))  # items' index: into all_examples
        teacher_vocab = cache.manifest["vocab_size"]
    else:
        assert config.teacher is not None
        if teacher_tokenizer is None:
            check_tokenizers(tokenizer, load_tokenizer(config.teacher))
        teacher_dtype = config.teacher_dtype
        if teacher_dtype == "auto":
            teacher_dtype = "bfloat16" if args.bf16 else "float32"
        teacher = load_model(config.teacher, dtype=teacher_dtype, device="cpu", device_map=config.teacher_device_map,
                             max_memory=config.teacher_max_memory, what="teacher",
                             hint="use --teacher-device-map auto (with --max-memory), DeepSpeed ZeRO-3, "
                                  "--teacher-cache or a smaller --teacher-dtype", attn_implementation=config.attention)

    # One kind of example only: its term gets all the weight (no counterfactuals = plain KD, whatever lambda says).
    n_cf = sum(e.counterfactual for e in examples)
    lam = config.lam if 0 < n_cf < len(examples) else (1.0 if n_cf == 0 else 0.0)
    if lam != config.lam:
        log.warning("only %s examples: using lambda = %s instead of %s", "original" if n_cf == 0 else "counterfactual", lam, config.lam)

    student = load_model(config.student, dtype=config.dtype, device="cpu", trainable=True,
                         attn_implementation=config.attention)
    student.train()
    padder.packed = use_packing(config.packing, student)
    vocab = (shared_vocab_size(student, teacher, tokenizer, teacher_vocab) if teacher_tokenizer is None
             else shared_vocab_size(student, None, tokenizer))
    if teacher_tokenizer is not None:
        aligned = _shared_ids(aligned, tokenizer, teacher_tokenizer, vocab,
                              model_vocab_size(teacher) if teacher is not None else int(teacher_vocab))
    if config.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        targets: Any = config.lora_target_modules
        if targets == ["all-linear"]:
            targets = "all-linear"
        student = get_peft_model(student, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, target_modules=targets, task_type="CAUSAL_LM"))

    trainer = DistillTrainer(
        model=student,
        args=args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[metrics_callback(out), *(callbacks or [])],
        teacher=teacher,
        lam=lam,
        temperature=config.temperature,
        alpha=config.alpha,
        kl_chunk_size=config.kl_chunk_size or None,
        vocab_size=vocab,
        teacher_device=config.teacher_device,
        mix=config.mix,
        group_by_length=config.group_by_length,
        chunked_head=config.chunked_head,
        cd_weighting=config.cd_weighting,
        divergence=config.divergence_spec(),
        aligned=aligned,
    )
    if config.student_responses > 0:
        trainer.on_policy = on_policy(config, all_examples, tokenizer, teacher_tokenizer, padder)
    trainer.model_names = {"student": config.student,  # named by the one-line stop on non-finite numbers
                           "teacher": str(config.teacher_cache or config.teacher)}
    if os.environ.get("LEAF_VERBOSE", "1") == "0":  # `leaf distill` without -v: the bar, not raw loss dicts
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.pop_callback(PrinterCallback)  # prints the dicts when there is no bar (not a terminal)
        if trainer.pop_callback(ProgressCallback) is not None:
            trainer.add_callback(QuietProgress)
    if trainer.is_world_process_zero():
        out.mkdir(parents=True, exist_ok=True)
        record = public_settings(config)
        n_eval_cf = sum(e.counterfactual for e in eval_examples)
        record["_run"] = {
            "examples": len(examples),
            "counterfactual_examples": n_cf,
            "eval_examples": len(eval_examples),
            "eval_counterfactual_examples": n_eval_cf,
            "heldout_examples": len(heldout),
            "lambda_used": lam,
            "shared_vocab_size": vocab,
            "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
            "processes": args.world_size,
            "distributed_type": str(trainer.accelerator.distributed_type).split(".")[-1],
            "backend": trainer.accelerator.state.backend,
            "effective_batch": config.batch_size * config.grad_accum * args.world_size,
            "packed": padder.packed,
            "torch": torch.__version__,
        }
        if aligned is not None:
            one = sum(1 for e in all_examples for g in _group_sizes(e) if g == (1, 1))
            total = sum(len(e.groups or ()) for e in all_examples)
            record["_run"]["cross_tokenizer"] = {"method": aligned[0], "shared_vocab": int(aligned[1].numel()),
                                                 "aligned_1to1": one / max(total, 1),
                                                 "aligned_merged": 1 - one / max(total, 1)}
        write_atomic(out / CONFIG_FILE, json.dumps(record, indent=2, default=str) + "\n")
        if config.eval_split > 0:
            write_atomic(out / HELDOUT_FILE, json.dumps({
                "eval_split": config.eval_split, "seed": config.seed,
                "sources": sorted({e.group for e in heldout}), "examples": [e.key for e in heldout],
            }, indent=2) + "\n")
    return trainer


def on_policy(config: DistillConfig, examples: list[Any], tokenizer: Any, teacher_tokenizer: Any,
              collate: Any) -> Any:
    """The :class:`~leaf.distill.onpolicy.OnPolicy` rewriter of ``--student-responses``."""
    from leaf.distill.onpolicy import OnPolicy, example_builder

    escape = config.special_tokens_in_text == "escape"
    build = example_builder(tokenizer, teacher_tokenizer, include_eos=config.include_eos,
                            max_length=config.max_length, escape_special=escape)
    kept = sum(e.prompt is None for e in examples)
    if kept:
        log.info("--student-responses: %d example(s) keep their reference response (their loss covers part of it)",
                 kept)
    return OnPolicy(config.student_responses, config.seed, examples, build, collate, tokenizer,
                    max_new_tokens=config.student_max_new_tokens, temperature=config.student_temperature,
                    escape_special=escape)


def cross_tokenizer_plan(config: DistillConfig, tokenizer: Any, cache: Any = None) -> tuple[Any, Any]:
    """``(teacher tokenizer, method)`` for an aligned run, ``(None, None)`` for one shared tokenizer.

    ``off`` keeps the refusal of another tokenizer; ``auto`` aligns only when the tokenizers differ. A teacher
    cache (:class:`leaf.distill.cache.TeacherCache`) decides: one made across tokenizers brings the teacher's
    tokenizer and the ``gold`` alignment (``uld`` when asked for).
    """
    from leaf.config import ConfigError
    from leaf.distill.data import TokenizerMismatch, check_tokenizers
    from leaf.models import load_tokenizer

    mode = config.cross_tokenizer
    if cache is not None:
        if cache.cross_tokenizer is None:
            if mode in ("gold", "uld"):
                raise ConfigError(f"{cache.root}: --cross-tokenizer {mode} with a cache of the student's own "
                                  "vocabulary; build the cache with `leaf cache-teacher --cross-tokenizer gold`")
            return None, None
        if mode == "off":
            raise ConfigError(f"{cache.root}: the cache holds a teacher with another tokenizer (its top k at its own "
                              "tokens); train from it with --cross-tokenizer auto")
        return cache.teacher_tokenizer(), "uld" if mode == "uld" else cache.cross_tokenizer
    if mode == "off" or config.teacher is None:
        return None, None
    teacher_tokenizer = load_tokenizer(config.teacher)
    if mode == "auto":
        try:
            check_tokenizers(tokenizer, teacher_tokenizer)
            return None, None
        except TokenizerMismatch:
            mode = "gold"
    log.info("cross-tokenizer distillation (%s): the teacher renders and tokenizes each sample itself", mode)
    return teacher_tokenizer, mode


def _shared_ids(method: str, tokenizer: Any, teacher_tokenizer: Any, vocab: int, teacher_vocab: int) -> tuple[str, Any, Any]:
    """``(method, student ids, teacher ids)`` of the shared vocabulary; the end-of-turn tokens are paired."""
    from leaf.data.render import render, encode
    from leaf.distill.align import shared_vocab

    def end_of_turn(tok: Any) -> int | None:
        r = render(tok, "hi", "ok")
        enc = encode(tok, r.text)
        after = [i for i, (a, _b) in enumerate(enc.offsets) if a >= r.response_span[1]]
        return enc.input_ids[after[0]] if after and enc.input_ids[after[0]] in set(tok.all_special_ids) else None

    s_end, t_end = end_of_turn(tokenizer), end_of_turn(teacher_tokenizer)
    pairs = [(s_end, t_end)] if s_end is not None and t_end is not None else []
    m = shared_vocab(tokenizer, teacher_tokenizer, pairs, vocab, teacher_vocab)
    return method, torch.tensor(m.student, dtype=torch.long), torch.tensor(m.teacher, dtype=torch.long)


def _group_sizes(example: Any) -> list[tuple[int, int]]:
    """Per student loss token of a cross-tokenizer example: (student tokens, teacher tokens) of its group."""
    from collections import Counter

    s, t = Counter(example.groups or ()), Counter(example.teacher_groups or ())
    return [(s[g], t[g]) for g in example.groups or ()]


def _save_final(trainer: Any, tokenizer: Any, out: Path, *, lora: bool) -> None:
    """Final student in ``out`` (safetensors, loadable with ``from_pretrained``) plus its tokenizer."""
    if lora:
        model = trainer.accelerator.unwrap_model(trainer.model)
        merged = model.merge_and_unload()
        if trainer.is_world_process_zero():
            merged.save_pretrained(out)
            tokenizer.save_pretrained(out)
    else:
        trainer.save_model(str(out))  # gathers ZeRO-3 / FSDP shards; saves the tokenizer (processing_class)
    trainer.accelerator.wait_for_everyone()
