"""The ``transformers.TrainingArguments`` a :class:`~leaf.distill.config.DistillConfig` maps to."""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainingArguments

from leaf.distill.config import DistillConfig


def _use_cpu(device: str) -> bool:
    """``--device`` -> ``TrainingArguments.use_cpu``; ``cuda:N`` makes GPU N the current one, which the Trainer takes."""
    if device == "auto":
        return not torch.cuda.is_available()
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev.index)
    return dev.type == "cpu"


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
        use_cpu=_use_cpu(config.device),
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


def _bf16_available() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
