"""Weight bytes one process holds while scoring saliency with ``--shard-models fsdp``, against one process.

Builds a tiny Llama teacher (hidden 1024, 8 layers, float32) on every
process, shards it over the processes of the run with
:func:`leaf.sharding.shard_model` exactly as ``leaf detect --shard-models fsdp``
does, and runs one saliency pass (forward and backward to the input
embeddings, chunked output head) on a batch of 2 x 64 tokens. Hooks on every
module (forward, and backward) record the weights gathered at that moment
(parameters that are plain tensors, not DTensor shards). Prints, per process:
the whole model's weight bytes, this process's shards, the most gathered at
once, and shards + that peak.

The model is saved once and loaded the way ``leaf detect --shard-models fsdp`` loads it
(:func:`leaf.sharding.load_sharded`: process 0 reads the weights, the others build the model empty and
receive their shares), and each process also reports how much its resident memory's high-water mark
(``VmHWM``) grew during the load: host memory a load costs on that process.

    CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 benchmarks/bench_shard_memory.py
"""

from __future__ import annotations

import argparse

MIB = 2**20


from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()

    import torch
    import torch.distributed as dist

    import tempfile
    from pathlib import Path

    from leaf.detect.saliency import embedding_saliency
    from leaf.sharding import load_sharded, parameter_bytes
    from leaf.tiny import build_model, build_tokenizer

    dist.init_process_group("gloo")
    tok = build_tokenizer(style="llama3")
    folder = Path(tempfile.gettempdir()) / f"bench-shard-memory-{args.hidden}x{args.layers}"
    if dist.get_rank() == 0 and not (folder / "model.safetensors").exists():
        model = build_model(tok, hidden_size=args.hidden, num_layers=args.layers, num_heads=8, seed=0)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        del model
    dist.barrier()
    before = _high_water()
    model = load_sharded(str(folder), dtype="float32", device="cpu", what="teacher")
    grown = _high_water() - before
    shards = parameter_bytes(model)
    full = sum(p.numel() * 4 for p in build_model(tok, hidden_size=args.hidden, num_layers=args.layers,
                                                   num_heads=8, seed=0).parameters())
    peak = [0]

    def record(*_: object) -> None:
        gathered = sum(p.numel() * p.element_size() for m in model.modules() for p in m._parameters.values()
                       if p is not None and not hasattr(p, "to_local"))
        peak[0] = max(peak[0], gathered)

    for m in model.modules():
        m.register_forward_pre_hook(record)
        m.register_forward_hook(record)
        m.register_full_backward_pre_hook(record)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, len(tok) - 1, (2, 64), generator=gen)
    target = torch.zeros_like(ids, dtype=torch.bool)
    target[:, 40:] = True
    embedding_saliency(model, ids, torch.ones_like(ids), target, chunk_size=16)
    print(f"rank {dist.get_rank()} of {dist.get_world_size()}: whole model {full / MIB:.1f} MiB, shards "
          f"{shards / MIB:.1f} MiB, most gathered at once {peak[0] / MIB:.1f} MiB, peak held "
          f"{(shards + peak[0]) / MIB:.1f} MiB; resident high-water mark grew {grown / MIB:.1f} MiB while "
          "loading", flush=True)
    dist.barrier()
    dist.destroy_process_group()


def _high_water() -> int:
    """This process's peak resident memory so far (``VmHWM`` of /proc/self/status), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


if __name__ == "__main__":
    main()
