"""LeaF Stage 2's ``transformers.Trainer`` subclass, :class:`DistillTrainer`.

It only overrides what distillation changes:

* ``compute_loss`` runs the student, gets the teacher's targets (a live,
  frozen teacher forward on the *same* input ids, or the cached top-k), and
  calls :func:`leaf.distill.losses.distill_loss`;
* ``_get_num_items_in_batch`` counts the loss tokens of originals and of
  counterfactuals over the whole optimiser step (all gradient-accumulation
  micro-batches, all processes), so each term of
  ``lambda * L_kd + (1 - lambda) * L_cd`` is a mean over its own tokens (or,
  with ``--cd-weighting token``, the pooled mean is over all of them) and the
  update does not depend on how the step is split;
* ``evaluation_loop`` reports the loss over all held-out tokens
  (:func:`leaf.distill.metrics.eval_metrics`);
* ``log`` adds ``kd_loss``, ``cd_loss``, ``ce_loss`` and ``tokens_per_s``.

Everything else (mixed precision, accumulation, cosine schedule, checkpoints,
resume, DDP / FSDP / DeepSpeed through accelerate, tensorboard / wandb) is the
Trainer's own. The run around it (data, models, arguments, callbacks, the
output folder) is :mod:`leaf.distill.run`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from leaf.batching import loss_positions, model_inputs, per_item_counts
from leaf.distill.aligned import TopKRows
from leaf.distill.losses import DenseTeacher, TopKTeacher, distill_loss, hybrid_token_weights, loss_rows
from leaf.distill.metrics import eval_metrics
from leaf.distill.teacher import place_teacher

log = logging.getLogger(__name__)

#: ``--chunked-head auto`` chunks the output heads when a micro-batch's fp32 logits would exceed this.
CHUNKED_HEAD_BYTES = 256 * 2**20


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
        divergence: Any = None,
        aligned: Any = None,
        **kwargs: Any,
    ) -> None:
        self.mix = mix
        #: cross-tokenizer runs: ``(method, student shared ids, teacher shared ids)``; None with one tokenizer
        self.aligned = aligned
        self._aligned_counts = torch.zeros(2, dtype=torch.float64)  # student loss tokens in 1:1 / merged groups
        self.divergence = divergence  # a leaf.distill.divergences.Divergence; None: forward KL
        self.chunked_head = chunked_head
        self.cd_weighting = cd_weighting
        self.group_by_length = group_by_length  # --mix interleave: grouped inside InterleavedSampler
        super().__init__(*args, **kwargs)
        self.lam, self.temperature, self.alpha = lam, temperature, alpha
        self.kl_chunk_size, self.vocab_size = kl_chunk_size, vocab_size
        self.teacher = place_teacher(teacher, self, teacher_device) if teacher is not None else None
        self._keep_ok: bool | None = None  # does the student accept a boolean logits_to_keep?
        self._sums = torch.zeros(4, dtype=torch.float64)  # kd, cd, ce (step-normalised), tokens
        self._eval_rows: dict[int, tuple[float, int, bool, float]] | None = None  # during evaluation_loop
        self._last_log = (0, time.perf_counter())
        self.on_policy: Any = None  #: --student-responses: a leaf.distill.onpolicy.OnPolicy (set by the run)
        self.add_callback(_LogClock(self))

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

    # -- on-policy responses: the step's batches rewritten before their tokens are counted ---------
    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> Any:
        batches, counts = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.on_policy is None or not batches or not self.model.training:
            return batches, counts
        synced = self.is_fsdp_enabled or self.is_deepspeed_enabled
        student = self.accelerator.unwrap_model(self.model)
        batches = self.on_policy.rewrite(student, batches, self.state.global_step, self.args.process_index, synced)
        return batches, self._get_num_items_in_batch(batches, device)

    # -- token counts over the whole optimiser step ---------------------------------
    def _get_num_items_in_batch(self, batch_samples: list, device: Any) -> Any:
        counts = torch.zeros(2, dtype=torch.long)
        for batch in batch_samples:
            counts += _token_counts(batch["labels"], batch["counterfactual"], batch.get("segment"))
        counts = counts.to(device)
        if self.args.world_size > 1:
            counts = self.accelerator.gather(counts.view(1, 2)).view(-1, 2).sum(0)
        return counts

    # -- the loss ----------------------------------------------------------------------
    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        labels = inputs.pop("labels")
        is_cf_row = inputs.pop("counterfactual").bool()
        index = inputs.pop("index", None)
        segment = inputs.pop("segment", None)  # packed rows (--packing): the item of each token
        topk_lp = inputs.pop("topk_logprobs", None)
        topk_ids = inputs.pop("topk_ids", None)
        topk_actual = inputs.pop("topk_actual", None)  # a cached teacher with another tokenizer
        cross = {k: inputs.pop(k) for k in ("teacher_input_ids", "teacher_attention_mask", "teacher_labels", "groups",
                                            "teacher_groups", "teacher_position_ids", "teacher_segment") if k in inputs}
        scale = 1.0
        if num_items_in_batch is None or not torch.is_tensor(num_items_in_batch) or num_items_in_batch.numel() != 2:
            num_items_in_batch = _token_counts(labels, is_cf_row, segment)
        elif self.args.world_size > 1:
            scale = float(self.accelerator.num_processes)  # DDP / ZeRO average gradients over processes
        n_kd, n_cd = num_items_in_batch.float().to(labels.device)

        B, L = labels.shape
        rows, targets = loss_rows(labels)
        owner = rows // L if segment is None else segment.reshape(-1)[rows]  # the item of each loss row
        is_cf = is_cf_row[owner]
        # Only the loss positions matter (logits_to_keep = boolean mask; transformers >= 5): rows come in the
        # row-major order of `rows`. Models without it give (B, L, ...) outputs, indexed by `rows`.
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = loss_positions(labels)
        w_kl, w_ce = hybrid_token_weights(is_cf, self.lam, n_kd, n_cd, self.alpha, n_ce=n_kd + n_cd,
                                          cd_weighting=self.cd_weighting)
        loss_kw = dict(
            labels=targets if self.alpha else None, w_ce=w_ce * scale if self.alpha else None,
            temperature=self.temperature, chunk_size=self.kl_chunk_size, vocab_size=self.vocab_size,
            divergence=self.divergence,
        )
        if topk_lp is None and self.teacher is None:
            raise RuntimeError("no teacher and no cached teacher targets in the batch")
        from leaf.distill.losses import chunked_head_kl

        head = self._student_head(model) if self._chunk_heads(rows.numel()) and not cross else None
        if cross:
            cached = None if topk_lp is None else TopKRows(topk_lp, topk_ids, topk_actual)
            out, parts = self._aligned_parts(model, inputs, keep, rows, targets, cross, w_kl * scale, loss_kw, cached)
        elif head is not None:
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
                real = inputs["attention_mask"].sum() if segment is None else (segment >= 0).sum()
                step = torch.stack([kd * scale, cd * scale, ce * scale, real.float()])
                self._sums += step.double().cpu()
            elif self._eval_rows is not None:
                self._record_eval(owner, is_cf_row.numel(), is_cf_row, parts, index)
        loss = parts.loss
        if model.training and self.args.world_size == 1 and not bool(torch.isfinite(loss.detach())):
            # one process: stop at the micro-batch (several: the all-reduced gradient norm stops every process)
            self._stop_non_finite(f"the distillation loss is {float(loss)}")
        return (loss, out) if return_outputs else loss

    def _aligned_parts(self, model: Any, inputs: dict[str, Any], keep: Any, rows: Any, targets: Any,
                       cross: dict[str, Any], w_kl: Any, loss_kw: dict[str, Any],
                       cached: TopKRows | None = None) -> tuple[Any, Any]:
        """The cross-tokenizer loss (:func:`leaf.distill.aligned.aligned_loss`): the teacher runs on its own ids (or
        its rows come from a cache, ``cached``); each student loss token carries the divergence of its group (a group
        weighs the sum of its tokens' weights)."""
        from leaf.distill.aligned import aligned_loss
        from leaf.distill.losses import LossParts
        from leaf.models import input_device

        out = self._forward(model, inputs, keep)
        logits = out.logits if out.logits.dim() == 2 else out.logits.reshape(-1, out.logits.shape[-1])[rows]
        t_labels = cross["teacher_labels"]
        t_rows, t_targets = loss_rows(t_labels)
        t_keep = torch.zeros_like(t_labels, dtype=torch.bool)
        t_keep[:, :-1] = loss_positions(t_labels)
        t_out: Any = cached
        if cached is None:
            dev = input_device(self.teacher)
            kwargs = {**model_inputs(cross, dev, prefix="teacher_"), "use_cache": False}
            with torch.no_grad():
                t_out = self.teacher(**kwargs, logits_to_keep=t_keep.to(dev)).logits if self._keep_ok else None
                if t_out is None or t_out.dim() != 2:
                    t_out = self.teacher(**kwargs).logits
                    t_out = t_out.reshape(-1, t_out.shape[-1])[t_rows.to(dev)]
        method, shared_s, shared_t = self.aligned
        groups, t_groups = cross["groups"].to(logits.device), cross["teacher_groups"].to(logits.device)
        n = int(groups.max()) + 1 if groups.numel() else 0
        weights = torch.zeros(n, dtype=torch.float32, device=logits.device).index_add_(0, groups, w_kl.float())
        vocab = self.vocab_size or logits.shape[-1]
        parts = aligned_loss(logits[:, :vocab], t_out, groups, t_groups, targets.to(logits.device),
                             t_targets.to(logits.device), weights, shared_s.to(logits.device),
                             shared_t.to(logits.device), method=method, temperature=self.temperature,
                             divergence=self.divergence, chunk_rows=self.kl_chunk_size)
        kl = parts.per_group[groups]
        loss = parts.loss
        ce = torch.zeros_like(kl)
        if loss_kw.get("labels") is not None:
            ce_rows = torch.nn.functional.cross_entropy(logits.float(), targets.to(logits.device), reduction="none")
            loss = loss + (loss_kw["w_ce"] * ce_rows).sum()
            ce = ce_rows.detach()
        with torch.no_grad():
            sizes_s = torch.bincount(groups, minlength=n)
            sizes_t = torch.bincount(t_groups, minlength=n)
            one = ((sizes_s == 1) & (sizes_t == 1))[groups].sum()
            if model.training:
                self._aligned_counts += torch.stack([one, groups.numel() - one]).double().cpu()
        return out, LossParts(loss, kl, ce)

    # -- non-finite numbers stop the run before anything of theirs is applied or saved -------
    def _get_grad_norm(self, model: Any, grad_norm: Any = None) -> Any:
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        # fp16 mixed precision: the gradient scaler skips steps with inf gradients by design
        if grad_norm is not None and not self.args.fp16 and not torch.isfinite(torch.as_tensor(grad_norm)).all():
            self._stop_non_finite(f"the gradient norm is {float(grad_norm)}")
        return grad_norm

    def _stop_non_finite(self, what: str) -> None:
        """One line naming the step, the models and the likely cause; raised before the optimiser step."""
        from leaf.models import NonFiniteError, first_non_finite

        names = getattr(self, "model_names", {})
        student, teacher = names.get("student", "the student"), names.get("teacher", "the teacher")
        bad = first_non_finite(self.accelerator.unwrap_model(self.model))
        if bad is not None:
            cause = f"the student's weights hold NaN or infinite values (first in {bad})"
        else:
            cause = ("the weights are finite, so a forward pass overflowed (check --dtype / --teacher-dtype; "
                     "float32 overflows only on extreme weights or inputs)")
        raise NonFiniteError(
            f"step {self.state.global_step + 1}: {what} (student {student}, teacher {teacher}); {cause}; "
            "stopped before this step changed the weights, and nothing of it was saved"
        )

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
        kwargs = {**model_inputs(inputs), "use_cache": False}
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
        kwargs = {**model_inputs(inputs, dev), "use_cache": False}
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
            if self.aligned is not None:
                counts = self._aligned_counts.to(self.args.device)
                if self.args.world_size > 1:  # every process's loss tokens, as the logged losses are
                    counts = self.accelerator.gather(counts.view(1, -1)).view(-1, 2).sum(0)
                total = max(float(counts.sum()), 1.0)
                logs["aligned_1to1"] = float(counts[0]) / total
                logs["aligned_merged"] = float(counts[1]) / total
                self._aligned_counts.zero_()
            if self.on_policy is not None:
                seconds, responses, tokens = self.on_policy.take_counts()
                gen = torch.tensor([seconds, responses, tokens], dtype=torch.float64, device=self.args.device)
                if self.args.world_size > 1:
                    gen = self.accelerator.gather(gen.view(1, -1).float()).view(-1, 3)
                    gen = torch.stack([gen[:, 0].max(), gen[:, 1].sum(), gen[:, 2].sum()])
                logs["student_responses"] = float(gen[1]) / steps  # per optimiser step, all processes
                logs["student_response_tokens"] = float(gen[2]) / max(float(gen[1]), 1.0)  # mean length
                logs["generation_share"] = float(gen[0]) / max(now - self._last_log[1], 1e-9)  # of the wall time
            self._last_log = (self.state.global_step, now)
        super().log(logs, start_time)


def _token_counts(labels: Any, is_cf_row: Any, segment: Any = None) -> Any:
    """``[n_kd, n_cd]``: loss tokens of originals and counterfactuals in a ``(B, L)`` label batch (packed rows:
    ``segment`` names the item of each token, ``is_cf_row`` is per item)."""
    cf = is_cf_row.bool().cpu()
    per_item = torch.tensor(per_item_counts(labels, segment, len(cf)), dtype=torch.long)
    return torch.stack([per_item[~cf].sum(), per_item[cf].sum()])


class _LogClock(TrainerCallback):
    """Starts the per-interval means of :meth:`DistillTrainer.log` at the step training starts from (a resumed
    run's first logged ``kd_loss`` is a mean over the steps since the checkpoint, not since step 0)."""

    def __init__(self, trainer: DistillTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer._last_log = (state.global_step, time.perf_counter())
