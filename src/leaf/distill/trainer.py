"""LeaF Stage 2 on ``transformers.Trainer``: the config, the Trainer subclass, and ``distill()``.

:class:`DistillTrainer` only overrides what distillation changes:

* ``compute_loss`` runs the student, gets the teacher's targets (a live,
  frozen teacher forward on the *same* input ids, or the cached top-k), and
  calls :func:`leaf.distill.losses.distill_loss`;
* ``_get_num_items_in_batch`` counts the loss tokens of originals and of
  counterfactuals over the whole optimiser step (all gradient-accumulation
  micro-batches, all processes), so each term of
  ``lambda * L_kd + (1 - lambda) * L_cd`` is a mean over its own tokens and
  the update does not depend on how the step is split;
* ``log`` adds ``kd_loss``, ``cd_loss``, ``ce_loss`` and ``tokens_per_s``.

Everything else (mixed precision, accumulation, cosine schedule, checkpoints,
resume, DDP / FSDP / DeepSpeed through accelerate, tensorboard / wandb) is the
Trainer's own.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from leaf.data.jsonl import write_atomic
from leaf.batching import loss_positions
from leaf.config import Summary, field_names, make, to_dict
from leaf.data.jsonl import SettingsMismatch
from leaf.data.records import DataError
from leaf.distill.config import DistillConfig
from leaf.distill.losses import DenseTeacher, TopKTeacher, distill_loss, hybrid_token_weights, loss_rows

log = logging.getLogger(__name__)

CONFIG_FILE = "leaf_config.json"
#: ``--chunked-head auto`` chunks the output heads when a micro-batch's fp32 logits would exceed this.
CHUNKED_HEAD_BYTES = 256 * 2**20

#: One row per evaluation on the held-out set (step, epoch, eval_loss, eval_kd_loss, eval_cd_loss, ...).
EVAL_METRICS_FILE = "eval_metrics.jsonl"
#: The held-out sample groups of --eval-split (ids of the original samples), for the record.
HELDOUT_FILE = "eval_heldout.json"
#: Options never written to leaf_config.json or the model card.
SECRET_OPTIONS = ("hub_token",)

METRIC_FIELDS = ("step", "epoch", "loss", "kd_loss", "cd_loss", "ce_loss", "lr", "grad_norm", "tokens_per_s")


# ----------------------------------------------------------------------------
# The Trainer subclass.
# ----------------------------------------------------------------------------


class DistillTrainer(Trainer):
    """``Trainer`` whose loss is the LeaF hybrid KL (see the module docstring)."""

    loss_is_scaled_for_ga = True  # compute_loss normalises over the whole optimiser step itself

    def __init__(
        self,
        *args: Any,
        teacher: Any = None,
        lam: float = 0.5,
        temperature: float = 1.0,
        alpha: float = 0.0,
        kl_chunk_size: int | None = 1024,
        vocab_size: int | None = None,
        teacher_device: str | None = None,
        mix: str = "interleave",
        group_by_length: bool = False,
        chunked_head: str = "auto",
        cd_weighting: str = "term-mean",
        **kwargs: Any,
    ) -> None:
        self.mix = mix
        self.chunked_head = chunked_head
        self.cd_weighting = cd_weighting
        self.group_by_length = group_by_length  # --mix interleave: grouped inside InterleavedSampler
        super().__init__(*args, **kwargs)
        self.lam, self.temperature, self.alpha = lam, temperature, alpha
        self.kl_chunk_size, self.vocab_size = kl_chunk_size, vocab_size
        self.teacher = self._place_teacher(teacher, teacher_device) if teacher is not None else None
        self._keep_ok: bool | None = None  # does the student accept a boolean logits_to_keep?
        self._sums = torch.zeros(4, dtype=torch.float64)  # kd, cd, ce (step-normalised), tokens
        self._eval_rows: dict[int, tuple[float, int, bool, float]] | None = None  # during evaluation_loop
        self._last_log = (0, time.perf_counter())

    def _place_teacher(self, teacher: Any, device: str | None) -> Any:
        teacher.eval()
        teacher.requires_grad_(False)
        if self.is_deepspeed_enabled:
            return _deepspeed_teacher(teacher, self.accelerator)
        if self.is_fsdp_enabled:
            return self.accelerator.prepare_model(teacher, evaluation_mode=True)
        if getattr(teacher, "hf_device_map", None):
            return teacher  # placed by device_map
        return teacher.to(device or self.args.device)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        from leaf.distill.data import InterleavedSampler

        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.mix == "interleave" and hasattr(dataset, "examples"):
            grouped = self.group_by_length
            window = 50 * self.args.per_device_train_batch_size * max(self.args.world_size, 1)
            return InterleavedSampler([e.counterfactual for e in dataset.examples], seed=self.args.seed,
                                      lengths=[len(e.input_ids) for e in dataset.examples] if grouped else None,
                                      window=window if grouped else None)
        return super()._get_train_sampler(train_dataset)

    # -- token counts over the whole optimiser step ---------------------------------
    def _get_num_items_in_batch(self, batch_samples: list, device: Any) -> Any:
        counts = torch.zeros(2, dtype=torch.long)
        for batch in batch_samples:
            counts += _token_counts(batch["labels"], batch["counterfactual"])
        counts = counts.to(device)
        if self.args.world_size > 1:
            counts = self.accelerator.gather(counts.view(1, 2)).view(-1, 2).sum(0)
        return counts

    # -- the loss ----------------------------------------------------------------------
    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        labels = inputs.pop("labels")
        is_cf_row = inputs.pop("counterfactual").bool()
        index = inputs.pop("index", None)
        topk_lp = inputs.pop("topk_logprobs", None)
        topk_ids = inputs.pop("topk_ids", None)
        scale = 1.0
        if num_items_in_batch is None or not torch.is_tensor(num_items_in_batch) or num_items_in_batch.numel() != 2:
            num_items_in_batch = _token_counts(labels, is_cf_row)
        elif self.args.world_size > 1:
            scale = float(self.accelerator.num_processes)  # DDP / ZeRO average gradients over processes
        n_kd, n_cd = num_items_in_batch.float().to(labels.device)

        B, L = labels.shape
        rows, targets = loss_rows(labels)
        is_cf = is_cf_row[rows // L]
        # Only the loss positions matter (logits_to_keep = boolean mask; transformers >= 5): rows come in the
        # row-major order of `rows`. Models without it give (B, L, ...) outputs, indexed by `rows`.
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = loss_positions(labels)
        w_kl, w_ce = hybrid_token_weights(is_cf, self.lam, n_kd, n_cd, self.alpha, n_ce=n_kd + n_cd,
                                          cd_weighting=self.cd_weighting)
        loss_kw = dict(
            labels=targets if self.alpha else None, w_ce=w_ce * scale if self.alpha else None,
            temperature=self.temperature, chunk_size=self.kl_chunk_size, vocab_size=self.vocab_size,
        )
        if topk_lp is None and self.teacher is None:
            raise RuntimeError("no teacher and no cached teacher targets in the batch")
        from leaf.distill.losses import chunked_head_kl

        head = self._student_head(model) if self._chunk_heads(rows.numel()) else None
        if head is not None:
            # Chunked output heads: the student gives its final hidden states at the loss positions (N, H), the
            # teacher a function of a chunk of them; no (N, V) logits of either model exist (see chunked_head_kl).
            out, hidden = self._forward(model, inputs, keep, head)
            target: Any = TopKTeacher(topk_lp, topk_ids) if topk_lp is not None else self._teacher_logits(inputs, keep, chunked=True)
            parts = chunked_head_kl(hidden, head, target, w_kl * scale, **loss_kw)
        else:
            # Full-logit path (DeepSpeed / FSDP, or a model whose logits are not head(hidden)): (N, V) logits.
            out = self._forward(model, inputs, keep)
            logits = out.logits
            selected = logits.dim() == 2
            student_rows = torch.arange(rows.numel(), device=rows.device) if selected else rows
            if topk_lp is not None:
                target = TopKTeacher(topk_lp, topk_ids)
            else:
                t_logits = self._teacher_logits(inputs, keep)
                t_rows = student_rows if t_logits.dim() == 2 else rows
                target = DenseTeacher(t_logits.reshape(-1, t_logits.shape[-1]), t_rows)
            parts = distill_loss(logits, student_rows, target, w_kl * scale, **loss_kw)
        with torch.no_grad():
            if model.training:
                cf = is_cf.float()
                kd = (parts.kl * (1 - cf)).sum() / n_kd.clamp(min=1)
                cd = (parts.kl * cf).sum() / n_cd.clamp(min=1)
                ce = parts.ce.sum() / (n_kd + n_cd).clamp(min=1)
                step = torch.stack([kd * scale, cd * scale, ce * scale, inputs["attention_mask"].sum().float()])
                self._sums += step.double().cpu()
            elif self._eval_rows is not None:
                self._record_eval(rows // L, B, is_cf_row, parts, index)
        loss = parts.loss
        return (loss, out) if return_outputs else loss

    # -- evaluation: the loss over all held-out tokens -------------------------------------
    def _record_eval(self, row_of: Any, B: int, is_cf_row: Any, parts: Any, index: Any) -> None:
        """Per held-out example: (KL sum, loss tokens, counterfactual?, CE sum), keyed by its dataset index
        (a sample a distributed sampler repeats to even out the batches is counted once)."""
        dev = parts.kl.device
        row_of = row_of.to(dev)
        kl = torch.zeros(B, dtype=torch.float64, device=dev).index_add_(0, row_of, parts.kl.double())
        ce = torch.zeros(B, dtype=torch.float64, device=dev).index_add_(0, row_of, parts.ce.double())
        n = torch.bincount(row_of, minlength=B)
        ids = index.tolist() if index is not None else list(range(len(self._eval_rows), len(self._eval_rows) + B))
        for b, (k, c, t, f) in enumerate(zip(kl.tolist(), ce.tolist(), n.tolist(), is_cf_row.tolist())):
            self._eval_rows[int(ids[b])] = (k, int(t), bool(f), c)

    def evaluation_loop(self, dataloader: Any, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> Any:
        """The Trainer's loop; its ``<prefix>_loss`` (a mean of micro-batch losses) is replaced by the LeaF loss
        over all held-out loss tokens, with its parts (:func:`eval_metrics`)."""
        self._eval_rows = {}
        try:
            output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                             metric_key_prefix)
            rows = self._eval_rows
            if self.args.world_size > 1:
                from accelerate.utils import gather_object

                rows = {k: v for part in gather_object([rows]) for k, v in part.items()}
        finally:
            self._eval_rows = None
        output.metrics.update(eval_metrics(rows.values(), self.lam, self.alpha, metric_key_prefix,
                                                  cd_weighting=self.cd_weighting))
        return output

    def _chunk_heads(self, n_rows: int) -> bool:
        """Chunked heads for this micro-batch? ``auto``: when its fp32 logits would pass :data:`CHUNKED_HEAD_BYTES`
        (the recomputation costs throughput, which only a large logits tensor is worth)."""
        if self.chunked_head != "auto":
            return self.chunked_head == "always"
        vocab = self.vocab_size or self.accelerator.unwrap_model(self.model).config.get_text_config().vocab_size
        return n_rows * vocab * 4 > CHUNKED_HEAD_BYTES

    def _student_head(self, model: Any) -> Any:
        """The student's :class:`~leaf.detect.saliency.OutputHead` for the chunked loss; None = full-logit path.

        DeepSpeed and FSDP shard the head's weight outside its own forward, so they keep full logits, as does a
        model whose logits are not its output head of its hidden states plus a known final transform (warned once).
        """
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return None
        from leaf.heads import output_head

        student = self.accelerator.unwrap_model(model)
        cached = getattr(self, "_chunked_head", None)
        if cached is None or cached[0] is not student:
            try:
                head = output_head(student)
            except NotImplementedError as exc:
                log.warning("chunked output head unavailable (%s); computing full logits", exc)
                head = None
            self._chunked_head = cached = (student, head)
        return cached[1]

    def _hidden_rows(self, model: Any, module: Any, kwargs: dict[str, Any], keep: Any) -> Any:
        """``(N, H)`` final hidden states at ``keep`` of one forward of ``model`` (its output head ``module`` computes nothing)."""
        from leaf.heads import capture_head_input

        with capture_head_input(module) as store:
            out = model(**kwargs, logits_to_keep=keep) if self._keep_ok else model(**kwargs)
        hidden = store.get("hidden")
        if hidden is None:
            raise RuntimeError(f"{type(model).__name__}'s forward did not call its output head")
        if hidden.dim() == 3:
            hidden = hidden[keep.to(hidden.device)]
        return out, hidden

    def _forward(self, model: Any, inputs: dict[str, Any], keep: Any, head: Any = None) -> Any:
        """Student forward; with ``logits_to_keep=keep`` when the model supports a boolean mask.

        With ``head`` (chunked path): ``(output, hidden)``, the final hidden states ``(N, H)`` at ``keep``
        and no logits computed; without: the output with its logits.
        """
        kwargs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"], "use_cache": False}
        n = int(keep.sum())
        if self._keep_ok is None:
            self._keep_ok = True  # try the mask once
            try:
                if head is not None:
                    out, hidden = self._hidden_rows(model, head.module, kwargs, keep)
                    if hidden.shape[0] == n and out.logits.dim() == 2:
                        return out, hidden
                else:
                    out = model(**kwargs, logits_to_keep=keep)
                    if out.logits.dim() == 2 and out.logits.shape[0] == n:
                        return out
            except (TypeError, IndexError, RuntimeError) as exc:
                log.info("logits_to_keep mask unsupported (%s); computing full logits", exc)
            self._keep_ok = False
        if head is not None:
            return self._hidden_rows(model, head.module, kwargs, keep)
        return model(**kwargs, logits_to_keep=keep) if self._keep_ok else model(**kwargs)

    def _teacher_logits(self, inputs: dict[str, Any], keep: Any, chunked: bool = False) -> Any:
        """The live teacher's logits (full-logit path), or with ``chunked`` a function ``slice -> (c, V_t)``
        logits of those loss tokens, computed from the teacher's final hidden states one chunk at a time."""
        from leaf.models import input_device

        teacher = self.teacher
        dev = input_device(teacher) if not self.is_deepspeed_enabled else self.args.device
        kwargs = {"input_ids": inputs["input_ids"].to(dev), "attention_mask": inputs["attention_mask"].to(dev), "use_cache": False}
        head = self._teacher_head() if chunked else None
        with torch.no_grad():
            if head is not None:
                _, hidden = self._hidden_rows(teacher, head.module, kwargs, keep.to(dev))
                return lambda sl: head(hidden[sl])
            if self._keep_ok:
                out = teacher(**kwargs, logits_to_keep=keep.to(dev)).logits
                if out.dim() == 2:
                    return out
            out = teacher(**kwargs).logits
        if chunked:  # the teacher keeps full logits: serve chunks of its loss rows
            flat = out.reshape(-1, out.shape[-1]) if out.dim() == 3 else out
            idx = keep.to(dev).reshape(-1).nonzero().squeeze(1) if out.dim() == 3 else None
            return lambda sl: flat[sl] if idx is None else flat[idx[sl]]
        return out

    def _teacher_head(self) -> Any:
        """The teacher's output head for chunked logits; None for DeepSpeed / FSDP or an unknown logit transform."""
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return None
        from leaf.heads import output_head

        cached = getattr(self, "_teacher_chunked_head", None)
        if cached is None:
            try:
                head = output_head(self.teacher)
            except NotImplementedError as exc:
                log.warning("teacher: chunked output head unavailable (%s); computing full logits", exc)
                head = None
            self._teacher_chunked_head = cached = (head,)
        return cached[0]

    # -- metrics -------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self.model.training:
            steps = max(self.state.global_step - self._last_log[0], 1)
            sums = self._sums.to(self.args.device)
            if self.args.world_size > 1:
                sums = self.accelerator.gather(sums.view(1, -1).float()).view(-1, 4)
                sums = torch.cat([sums[:, :3].mean(0), sums[:, 3:].sum(0)])
            now = time.perf_counter()
            logs["kd_loss"] = float(sums[0]) / steps
            logs["cd_loss"] = float(sums[1]) / steps
            logs["ce_loss"] = float(sums[2]) / steps
            logs["tokens_per_s"] = float(sums[3]) / max(now - self._last_log[1], 1e-9)
            self._sums.zero_()
            self._last_log = (self.state.global_step, now)
        super().log(logs, start_time)


def eval_metrics(rows: Any, lam: float, alpha: float, prefix: str = "eval",
                 cd_weighting: str = "term-mean") -> dict[str, float]:
    """The LeaF loss of held-out examples from their ``(KL sum, loss tokens, counterfactual?, CE sum)``.

    As in training: with ``term-mean`` each term is a mean over its own loss tokens, ``lambda x L_kd +
    (1 - lambda) x L_cd``; with ``token`` one pooled mean ``(lambda x S_kd + (1 - lambda) x S_cd) /
    (lambda x n_kd + (1 - lambda) x n_cd)`` (:func:`~leaf.distill.losses.hybrid_token_weights`); plus
    ``alpha x CE over all loss tokens``. With one kind of example only, its term is the loss.
    """
    kd = cd = ce = 0.0
    n_kd = n_cd = examples = 0
    for kl_sum, n, is_cf, ce_sum in rows:
        examples += 1
        if is_cf:
            cd, n_cd = cd + kl_sum, n_cd + n
        else:
            kd, n_kd = kd + kl_sum, n_kd + n
        ce += ce_sum
    out: dict[str, float] = {f"{prefix}_examples": examples, f"{prefix}_loss_tokens": n_kd + n_cd}
    if n_kd:
        out[f"{prefix}_kd_loss"] = kd / n_kd
    if n_cd:
        out[f"{prefix}_cd_loss"] = cd / n_cd
    if n_kd and n_cd:
        if cd_weighting == "token":
            loss = (lam * kd + (1 - lam) * cd) / (lam * n_kd + (1 - lam) * n_cd)
        else:
            loss = lam * kd / n_kd + (1 - lam) * cd / n_cd
    else:
        loss = kd / n_kd if n_kd else (cd / n_cd if n_cd else float("nan"))
    if alpha:
        out[f"{prefix}_ce_loss"] = ce / max(n_kd + n_cd, 1)
        loss += alpha * out[f"{prefix}_ce_loss"]
    out[f"{prefix}_loss"] = loss
    return out


def _quiet_progress() -> type:
    from transformers.trainer_callback import ProgressCallback

    class QuietProgress(ProgressCallback):
        """The Trainer's progress bar without its raw ``{'loss': ...}`` lines (metrics.jsonl/csv hold them)."""

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            return None

    return QuietProgress


_QuietProgress = _quiet_progress()


def _token_counts(labels: Any, is_cf_row: Any) -> Any:
    """``[n_kd, n_cd]``: loss tokens of originals and counterfactuals in a ``(B, L)`` label batch."""
    has = loss_positions(labels).sum(1)
    cf = is_cf_row.bool().to(has.device)
    return torch.stack([has[~cf].sum(), has[cf].sum()]).long().cpu()


def _deepspeed_teacher(teacher: Any, accelerator: Any) -> Any:
    """Shard a frozen teacher with the student's DeepSpeed config (ZeRO-3 partitions it; others replicate)."""
    import copy

    import deepspeed

    plugin = accelerator.state.deepspeed_plugin
    config = copy.deepcopy(plugin.deepspeed_config)
    stage = config.get("zero_optimization", {}).get("stage", 0)
    if stage != 3:
        config["zero_optimization"] = {"stage": 0}
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    engine, *_ = deepspeed.initialize(model=teacher, config=config)
    engine.eval()
    return engine




# ----------------------------------------------------------------------------
# Metrics files.
# ----------------------------------------------------------------------------


def _metrics_callback(output_dir: Path) -> Any:

    class MetricsFiles(TrainerCallback):
        """Writes DIR/metrics.jsonl and DIR/metrics.csv (one row per logging step) and DIR/eval_metrics.jsonl
        (one row per evaluation), on the main process."""

        def __init__(self) -> None:
            self.jsonl = output_dir / "metrics.jsonl"
            self.csv = output_dir / "metrics.csv"
            self.eval = output_dir / EVAL_METRICS_FILE

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if not state.is_world_process_zero:
                return
            if self.eval.exists():  # a resumed run: drop evaluations past the checkpoint
                kept = [x for x in self.eval.read_text().splitlines() if x.strip() and json.loads(x)["step"] <= state.global_step]
                self.eval.write_text("".join(x + "\n" for x in kept))
            rows = []
            if self.jsonl.exists():  # a resumed run: drop rows past the checkpoint
                rows = [json.loads(x) for x in self.jsonl.read_text().splitlines() if x.strip()]
                rows = [r for r in rows if r["step"] <= state.global_step]
            self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
            with self.csv.open("w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
                w.writeheader()
                w.writerows({k: r.get(k) for k in METRIC_FIELDS} for r in rows)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if not state.is_world_process_zero or not logs or "kd_loss" not in logs:
                return
            row = {
                "step": state.global_step,
                "epoch": logs.get("epoch", state.epoch),
                "loss": logs["loss"],
                "kd_loss": logs["kd_loss"],
                "cd_loss": logs["cd_loss"],
                "ce_loss": logs["ce_loss"],
                "lr": logs.get("learning_rate"),
                "grad_norm": logs.get("grad_norm"),
                "tokens_per_s": logs["tokens_per_s"],
            }
            with self.jsonl.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            with self.csv.open("a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=METRIC_FIELDS).writerow(row)

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None,
                        **kw: Any) -> None:
            if not state.is_world_process_zero or not metrics:
                return
            row = {"step": state.global_step, "epoch": state.epoch,
                   **{k: v for k, v in metrics.items() if k.startswith("eval_")}}
            self.eval.parent.mkdir(parents=True, exist_ok=True)
            with self.eval.open("a") as fh:
                fh.write(json.dumps(row) + "\n")

    return MetricsFiles()


# ----------------------------------------------------------------------------
# distill(): the whole run.
# ----------------------------------------------------------------------------


def _bf16_available() -> bool:

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _checkpoints(output_dir: Path) -> list[Path]:
    return sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)


def training_arguments(config: DistillConfig) -> Any:
    """The ``TrainingArguments`` a config maps to."""

    precision = config.precision
    if precision == "auto":
        precision = "bf16" if _bf16_available() else "fp32"
    return TrainingArguments(
        output_dir=str(config.out),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        optim=config.optim,
        max_grad_norm=config.max_grad_norm,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=config.report_to,
        seed=config.seed,
        data_seed=config.seed,
        remove_unused_columns=False,
        dataloader_num_workers=config.dataloader_num_workers,
        activation_checkpointing=config.gradient_checkpointing,
        use_cpu=not torch.cuda.is_available(),
        ddp_find_unused_parameters=False,
        disable_tqdm=None,
        label_names=["labels"],
        eval_strategy="steps" if config.has_eval else "no",
        eval_steps=(config.eval_steps or config.save_steps) if config.has_eval else None,
        per_device_eval_batch_size=config.eval_batch_size or config.batch_size,
        **_length_grouping(config.group_by_length and config.mix == "shuffle"),  # interleave: InterleavedSampler
    )


def _length_grouping(on: bool) -> dict[str, Any]:
    """transformers' length-grouped sampler: ``train_sampling_strategy`` (5.x) or ``group_by_length`` (4.x)."""
    if not on:
        return {}
    names = TrainingArguments.__dataclass_fields__
    return {"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in names else {"group_by_length": True}


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

    def line(self) -> str:
        resumed = " (resumed)" if self.resumed else ""
        evaluated = f"; eval loss {self.eval_loss:.4f}" if self.eval_loss is not None else ""
        pushed = f"; pushed to https://huggingface.co/{self.hub_repo}" if self.hub_repo else ""
        return (f"trained {self.steps} steps{resumed} on {self.examples} examples "
                f"({self.counterfactual_examples} counterfactual, lambda {self.lambda_used}){evaluated}; "
                f"wrote {self.out}{pushed}")


def distill(config: DistillConfig | None = None, **kwargs: Any) -> DistillSummary:
    """Distil ``config.teacher`` (or its cache) into ``config.student`` in ``config.out``.

    Takes a :class:`DistillConfig` or its fields as keyword arguments.
    """
    config = make(DistillConfig, config, kwargs, "leaf.distill()")
    out = Path(config.out)
    resume = _resume_point(config)
    trainer = build_trainer(config)
    trainer.train(resume_from_checkpoint=True if resume else None)
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
                          None if final_eval is None else float(final_eval["eval_loss"]), repo)


def last_evaluation(log_history: list[dict[str, Any]], step: int) -> dict[str, Any] | None:
    """The evaluation logged at ``step`` (``eval_*`` metrics), or None."""
    for entry in reversed(log_history):
        if "eval_loss" in entry and entry.get("step") == step:
            return {k: v for k, v in entry.items() if k.startswith("eval_")}
    return None


#: Options that do not change what is trained: a resumed run may differ in these.
_RESUME_FREE = ("out", "overwrite", "logging_steps", "save_steps", "save_total_limit", "report_to",
                "dataloader_num_workers", "max_steps", "epochs", "eval_data", "eval_counterfactuals", "eval_steps",
                "eval_batch_size", "push_to_hub", "hub_model_id", "hub_private", "hub_token", "card_results",
                "license")


def _resume_point(config: DistillConfig) -> bool:
    """The resume rule every stage shares: same folder + same settings resumes, other settings are refused.

    ``--overwrite`` deletes an earlier run's checkpoints and starts over.
    """
    out = Path(config.out)
    checkpoints = _checkpoints(out)
    if not checkpoints:
        return False
    if config.overwrite:
        for path in checkpoints:
            shutil.rmtree(path)
        return False
    saved_file = out / CONFIG_FILE
    if saved_file.exists():
        saved = json.loads(saved_file.read_text())
        saved = {field_names(DistillConfig).get(k): v for k, v in saved.items() if k in field_names(DistillConfig)}
        now = to_dict(config)
        differ = sorted(k for k in saved if k not in _RESUME_FREE and k in now and saved[k] != now[k])
        if differ:
            raise SettingsMismatch(
                f"{out} holds a run with other settings (differ in: {', '.join(differ)}); "
                "use another --out, or --overwrite to start over"
            )
    log.info("resuming from %s", checkpoints[-1])
    return True


def build_trainer(config: DistillConfig, callbacks: list[Any] | None = None) -> Any:
    """Load data, models (or the cache) and return a ready :class:`DistillTrainer`; writes leaf_config.json."""

    from leaf.distill.data import DistillCollator, ExampleDataset, check_tokenizers, load_examples, shared_vocab_size
    from leaf.models import load_model, load_tokenizer

    config.check_trackers()
    out = Path(config.out)
    args = training_arguments(config)
    tokenizer = load_tokenizer(config.student)
    all_examples = load_examples(tokenizer, config.data, config.counterfactuals, include_eos=config.include_eos, max_length=config.max_length)
    examples, eval_examples, eval_ids, heldout = _eval_split(config, tokenizer, all_examples)
    held = set(eval_ids)
    dataset = ExampleDataset(examples, [i for i in range(len(all_examples)) if i not in held])
    eval_dataset = ExampleDataset(eval_examples, eval_ids) if eval_examples else None
    collator: Any = DistillCollator(tokenizer.pad_token_id, config.pad_to_multiple_of)

    teacher = None
    teacher_vocab = None
    if config.teacher_cache is not None:
        from leaf.distill.cache import CachedCollator, TeacherCache

        cache = TeacherCache.open(config.teacher_cache)
        cache.check(tokenizer, all_examples, config.temperature, config.data, config.counterfactuals)
        collator = CachedCollator(collator, cache, ExampleDataset(all_examples))  # items' index: into all_examples
        teacher_vocab = cache.manifest["vocab_size"]
    else:
        assert config.teacher is not None
        check_tokenizers(tokenizer, load_tokenizer(config.teacher))
        teacher_dtype = config.teacher_dtype
        if teacher_dtype == "auto":
            teacher_dtype = "bfloat16" if args.bf16 else "float32"
        teacher = load_model(config.teacher, dtype=teacher_dtype, device="cpu", device_map=config.teacher_device_map,
                             max_memory=config.teacher_max_memory, what="teacher",
                             hint="use --teacher-device-map auto (with --max-memory), DeepSpeed ZeRO-3, "
                                  "--teacher-cache or a smaller --teacher-dtype")

    # One kind of example only: its term gets all the weight (no counterfactuals = plain KD, whatever lambda says).
    n_cf = sum(e.counterfactual for e in examples)
    lam = config.lam if 0 < n_cf < len(examples) else (1.0 if n_cf == 0 else 0.0)
    if lam != config.lam:
        log.warning("only %s examples: using lambda = %s instead of %s", "original" if n_cf == 0 else "counterfactual", lam, config.lam)

    student = load_model(config.student, dtype=config.dtype, device="cpu", trainable=True)
    student.train()
    vocab = shared_vocab_size(student, teacher, tokenizer, teacher_vocab)
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
        callbacks=[_metrics_callback(out), *(callbacks or [])],
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
    )
    if os.environ.get("LEAF_VERBOSE", "1") == "0":  # `leaf distill` without -v: the bar, not raw loss dicts
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.pop_callback(PrinterCallback)  # prints the dicts when there is no bar (not a terminal)
        if trainer.pop_callback(ProgressCallback) is not None:
            trainer.add_callback(_QuietProgress)
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
            "torch": torch.__version__,
        }
        write_atomic(out / CONFIG_FILE, json.dumps(record, indent=2, default=str) + "\n")
        if config.eval_split > 0:
            write_atomic(out / HELDOUT_FILE, json.dumps({
                "eval_split": config.eval_split, "seed": config.seed,
                "sources": sorted({e.group for e in heldout}), "examples": [e.key for e in heldout],
            }, indent=2) + "\n")
    return trainer


def public_settings(config: DistillConfig) -> dict[str, Any]:
    """The config as leaf_config.json and the model card record it: JSON-safe, secrets (the Hub token) left out."""
    record = to_dict(config)
    for name in SECRET_OPTIONS:
        record.pop(name, None)
    return json.loads(json.dumps(record, default=str))


def _eval_split(config: DistillConfig, tokenizer: Any, all_examples: list[Any]) -> tuple[list[Any], list[Any], list[int], list[Any]]:
    """``(training examples, evaluation examples, their ids, the examples --eval-split held out)``.

    The ids of held-out examples are their positions in ``all_examples`` (the teacher cache's collator looks
    them up there); --eval-data / --eval-counterfactuals examples follow. Any of those equal to a training
    example (same key, or the same tokens) is refused: evaluation is on samples never trained on.
    """
    from leaf.distill.data import load_examples, split_heldout

    train_pos, held_pos = split_heldout(all_examples, config.eval_split, config.seed)
    train = [all_examples[i] for i in train_pos]
    heldout = [all_examples[i] for i in held_pos]
    eval_examples, eval_ids = list(heldout), list(held_pos)
    if config.eval_data is not None or config.eval_counterfactuals is not None:
        extra = load_examples(tokenizer, config.eval_data, config.eval_counterfactuals, include_eos=config.include_eos,
                              max_length=config.max_length)
        keys = {e.key for e in train}
        tokens = {tuple(e.input_ids) for e in train}
        clash = [e.key for e in extra if e.key in keys or tuple(e.input_ids) in tokens]
        if clash:
            where = config.eval_data if config.eval_data is not None else config.eval_counterfactuals
            raise DataError([(f"{where}: {len(clash)} evaluation example(s) are also training examples (same id "
                              f"or same text), e.g. {', '.join(clash[:3])}; evaluation must be on held-out samples")])
        eval_ids += range(len(all_examples), len(all_examples) + len(extra))
        eval_examples += extra
    return train, eval_examples, eval_ids, heldout


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
