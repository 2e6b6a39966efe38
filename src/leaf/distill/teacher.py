"""Where the frozen live teacher runs: the student's devices, its own device map, FSDP or a DeepSpeed engine."""

from __future__ import annotations

from typing import Any


def place_teacher(teacher: Any, trainer: Any, device: str | None) -> Any:
    """``teacher`` frozen, in eval mode, placed as ``trainer`` runs: a DeepSpeed engine, prepared for FSDP,
    left where ``device_map`` put it, or moved to ``device`` (default: the trainer's device)."""
    teacher.eval()
    teacher.requires_grad_(False)
    if trainer.is_deepspeed_enabled:
        return deepspeed_teacher(teacher, trainer.accelerator)
    if trainer.is_fsdp_enabled:
        return trainer.accelerator.prepare_model(teacher, evaluation_mode=True)
    if getattr(teacher, "hf_device_map", None):
        return teacher  # placed by device_map
    return teacher.to(device or trainer.args.device)


def deepspeed_teacher(teacher: Any, accelerator: Any) -> Any:
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
