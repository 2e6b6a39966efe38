"""Run ``leaf`` under accelerate's FSDP plugin on CPU processes (gloo), for tests.

accelerate picks FSDP only for accelerator devices: on CPU processes it sets up plain multi-CPU data
parallelism (``MULTI_CPU``) even when the launch config says FSDP. Torch's FSDP2 (``fully_shard``) itself
runs on CPU with gloo, so this launcher restores the FSDP choice after accelerate made it -- in both the
accelerator state and the process state it is re-read from -- and then runs ``leaf``'s own CLI. Everything
else (the plugin from the launch config, ``Trainer``'s FSDP preparation, saving, resuming) is the unchanged
code path a GPU run takes.

    accelerate launch --config_file FSDP_CPU.yaml tests/distributed/fsdp_cpu.py distill ...
"""

from __future__ import annotations

import os
import sys

import accelerate.state as state
from accelerate.utils import DistributedType

_init = state.AcceleratorState.__init__


def _fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):  # type: ignore[no-untyped-def]
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    wanted = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if wanted and fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP


state.AcceleratorState.__init__ = _fsdp_on_cpu

if __name__ == "__main__":
    from leaf.cli import main

    sys.exit(main(sys.argv[1:]))
