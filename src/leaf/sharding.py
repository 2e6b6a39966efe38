"""Frozen models sharded over the processes of a launched run with torch FSDP2 (``fully_shard``).

Today's several-process mode (:mod:`leaf.distributed`) gives every process a
full copy of each model. With ``--shard-models fsdp`` every process holds
``1/N`` of each model's weights instead (a 70B teacher over 8 GPUs: about
17 GiB of bfloat16 weights each) and still computes on its own share of the
batches, so ``N`` GPUs compute at once (not one at a time, as a
``device_map`` pipeline does):

* each decoder layer is its own FSDP unit with ``reshard_after_forward=True``:
  its weights are all-gathered just before it runs (forward, and again in the
  backward pass) and freed after, so one gathered layer exists at a time;
* the root unit holds the rest (embedding, final norm, output head) and is
  *not* resharded after forward: the output head is applied a chunk at a time
  to the final hidden states **after** the model's forward returns
  (:func:`leaf.heads.chunked_nll`), and it needs those weights gathered then;
  they are freed after the backward pass (after a forward-only pass, as in
  ``leaf cache-teacher``, they stay gathered: one embedding and head more per
  process). (Making the head a unit of its own
  crashed the process on CPU when the chunks were recomputed in backward.)
* ``--gradient-checkpointing`` composes: FSDP2 gathers a layer again before
  its backward, which is when the checkpoint recomputes its forward;
* the weights are frozen: only input gradients are taken, so no gradient is
  reduced and no optimizer state exists.

Every all-gather is a collective: every process must run the same number of
forward and backward passes in the same order. A process with fewer batches
runs padding batches whose results are discarded (:func:`lockstep_steps`);
the out-of-memory halving retry is off under sharding (its retries would
differ between processes), so a batch that does not fit stops the run.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

log = logging.getLogger(__name__)

#: Values of ``--shard-models``: ``none`` (every process holds whole models) or ``fsdp``.
SHARD_MODES = ("none", "fsdp")


def shard_help(models: str) -> str:
    """The ``--shard-models`` help of a command whose ``models`` (e.g. "the teacher's and the student's") it shards."""
    return (f"under a launcher (torchrun, accelerate launch): none = every process holds whole models; fsdp = each "
            f"process holds 1/N of {models} weights (torch FSDP2, a decoder layer gathered at a time) and runs its "
            "own share of the batches (docs/scaling.md)")


def check_sharding(mode: str, *, device: str = "auto", conflicts: dict[str, Any] | None = None) -> None:
    """Refuse, in one line naming the option, what cannot go with ``--shard-models fsdp``.

    ``conflicts`` maps a flag to its value: any set (not ``None`` / ``False``) is refused.
    """
    if mode == "none":
        return
    if mode not in SHARD_MODES:
        raise ValueError(f"--shard-models must be one of {', '.join(SHARD_MODES)}, not {mode!r}")
    for flag, value in (conflicts or {}).items():
        if value not in (None, False):
            raise ValueError(f"--shard-models fsdp places every model itself (a share on each process); "
                             f"drop {flag}")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--shard-models fsdp puts process i on cuda:<local rank i>; --device must be auto, cuda "
                         f"or cpu, not {device!r}")


def shard_device(device: str = "auto") -> str:
    """This process's device under sharding: ``cuda:LOCAL_RANK`` when GPUs are used, else ``cpu``."""
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0') or 0)}"


def decoder_layers(model: Any) -> list[Any]:
    """The model's decoder layers (transformers' ``GradientCheckpointingLayer`` modules), in order."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise NotImplementedError(f"{type(model).__name__} has no decoder layers to shard (--shard-models fsdp)")
    return layers


def shard_model(model: Any, device: str = "auto") -> Any:
    """``model`` (frozen, in eval mode, on the CPU) sharded in place over every process of the run.

    Each process keeps ``1/N`` of each weight on :func:`shard_device` (FSDP2 moves the shards there, so a
    GPU never holds the whole model); see the module docstring for the units. Returns ``model``.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    # The root returns an empty view as logits (leaf.heads.capture_head_input: the head runs afterwards, in
    # chunks); nothing writes into it in place, so FSDP2's warning about views is noise on every batch.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    where = shard_device(device)
    if where.startswith("cuda"):
        import torch

        torch.cuda.set_device(where)
    mesh = init_device_mesh(where.split(":")[0], (dist.get_world_size(),))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, reshard_after_forward=True)
    fully_shard(model, mesh=mesh, reshard_after_forward=False)  # the head runs after forward returns
    return model


def load_sharded(name_or_path: str, *, dtype: str = "auto", device: str = "auto", what: str = "model",
                 tokenizer: Any = None, attn_implementation: str | None = None) -> Any:
    """The model sharded over every process of the run, read from disk by process 0 only.

    Process 0 loads it whole on its CPU (:func:`leaf.models.load_model`, checked as usual); the others build
    it on the meta device (no memory) from its config. All shard it (:func:`shard_model`), then process 0
    broadcasts every weight and buffer and each process keeps its ``1/N`` (torch's
    ``set_model_state_dict(..., broadcast_from_rank0=True)``): host memory holds one whole copy, on process
    0, instead of one per process. A load that fails on process 0 stops every process with its one line.

    ``dtype="auto"`` resolves for the device the shards run on (bfloat16 on a GPU), not for the host.
    """
    import torch
    import torch.distributed as dist

    from leaf.models import load_model, resolve_dtype, torch_dtype

    where = shard_device(device)
    if where.startswith("cuda"):
        torch.cuda.set_device(where)  # the collectives below run on this process's GPU
    dtype = resolve_dtype(dtype, where)
    rank = dist.get_rank()
    model, full, failure, error = None, {}, [None], None
    if rank == 0:
        try:
            model = load_model(name_or_path, dtype=dtype, device="cpu", what=what, tokenizer=tokenizer,
                               attn_implementation=attn_implementation)
            full = model.state_dict()
        except Exception as exc:  # every process must learn of it, or the others wait for weights forever
            failure, error = [(type(exc), str(exc))], exc
    dist.broadcast_object_list(failure, src=0)
    if failure[0] is not None:
        if error is not None:
            raise error
        kind, message = failure[0]
        raise _rebuilt(kind, f"{message} (process 0 could not load the {what})")
    if rank != 0:
        model = _empty_model(name_or_path, torch_dtype(dtype, "cpu"), attn_implementation)
    model = shard_model(model, device)
    _fill_from_rank0(model, full, where)
    del full
    log.info("%s sharded (FSDP2): %.1f MiB of its weights on this process", what, parameter_bytes(model) / 2**20)
    return model


def _rebuilt(kind: type, message: str) -> Exception:
    """Process 0's load error as this process raises it: a user error (a one-line ``ConfigError``) when it was one
    there, else a ``RuntimeError``."""
    from leaf.config import ConfigError

    return ConfigError(message) if issubclass(kind, (ConfigError, OSError)) else RuntimeError(message)


def _empty_model(name_or_path: str, dtype: Any, attn_implementation: str | None) -> Any:
    """The model of ``name_or_path``'s config on the meta device (no weights, no memory), frozen, in eval mode."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from leaf.gguf import resolve

    config = AutoConfig.from_pretrained(resolve(name_or_path))  # process 0 has converted a .gguf source
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, **kwargs)
    model.eval()
    model.requires_grad_(False)
    return model


def _fill_from_rank0(model: Any, full: dict[str, Any], where: str) -> None:
    """Process 0's weights (``full``; ``{}`` elsewhere) into every process's shards, and its buffers alike."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if dist.get_rank() != 0:
        model.to_empty(device=where)  # the shards' memory (1/N of each weight); filled below
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    for buffer in model.buffers():  # not all are in the state dict (rotary frequencies are not persistent)
        local = buffer.to_local() if hasattr(buffer, "to_local") else buffer
        dist.broadcast(local, src=0)
    if hasattr(model, "tie_weights"):
        model.tie_weights()


def is_sharded(model: Any) -> bool:
    """Whether ``model`` is an FSDP2 module (its weights are DTensor shards outside its forward)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return isinstance(model, FSDPModule)


def lockstep_steps(mine: int) -> int:
    """How many batches every process must run: the most any process has (``mine`` in a single process).

    A process with fewer runs padding batches (results discarded) so every all-gather has all processes.
    """
    from leaf.distributed import gather

    return max(int(n) for n in gather(mine))


def parameter_bytes(model: Any) -> int:
    """Bytes of ``model``'s weights held by this process: its shards under FSDP2, else every weight."""
    total = 0
    for p in model.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        total += local.numel() * local.element_size()
    return total


__all__ = ["SHARD_MODES", "check_sharding", "decoder_layers", "is_sharded", "load_sharded",
           "lockstep_steps", "parameter_bytes", "shard_device", "shard_help", "shard_model"]
