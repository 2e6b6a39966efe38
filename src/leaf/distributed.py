"""Several processes on one stage: samples sharded over ranks, one part file per rank, merged by rank 0.

``accelerate launch`` (or ``torchrun``) starts the same command ``N`` times;
:func:`rank_and_world` tells each process who it is (``(0, 1)`` without a
launcher, so a plain run is untouched). A stage then

1. builds its batches exactly as a single process does (same composition, so
   the same numbers) and takes every ``N``-th one (:func:`shard`);
2. writes its results to its own part ``OUT.part-RRRRR-of-NNNNN`` (a
   :class:`~leaf.data.jsonl.ResumableJsonl`: a killed rank resumes its part);
3. waits for the others (:func:`barrier`); rank 0 merges the parts into
   ``OUT`` (:func:`merge_parts`) in the order a single process writes its
   lines, writes ``OUT``'s sidecar, and only then removes the parts.

A rerun with another number of processes while parts exist is refused
(:func:`check_parts`); once merged, ``OUT`` itself counts as done for any
number of processes (:func:`done_keys`), so such a rerun is a no-op.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from leaf.data.jsonl import SettingsMismatch, check_schema, dumps, meta_path, write_atomic

T = TypeVar("T")

#: How long a rank waits for the others at a barrier (ranks finish their shards at different times).
BARRIER_TIMEOUT = timedelta(hours=24)

_PART = re.compile(r"\.part-(\d{5})-of-(\d{5})$")


class ShardMismatch(SettingsMismatch):
    """Parts of a run with another number of processes are in the way (a user error, like other settings)."""


def _launched() -> bool:
    if "torch" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return True
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def _state() -> Any:
    import torch
    from accelerate import PartialState

    # without a GPU, accelerate sets up several processes (gloo) only when told it runs on the CPU
    return PartialState(cpu=not torch.cuda.is_available(), timeout=BARRIER_TIMEOUT)


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)``: from accelerate's ``PartialState`` under a launcher, else ``(0, 1)``."""
    if not _launched():
        return 0, 1
    state = _state()
    return state.process_index, state.num_processes


def barrier() -> None:
    """Wait for every process (nothing to wait for in a single process)."""
    if _launched():
        _state().wait_for_everyone()


def finish() -> None:
    """After a command ran to its end in a launched run: wait for every process, then leave the process group.

    An interpreter that exits with the group still up can abort in the collective library's threads
    (``terminate called without an active exception``, seen with gloo on a loaded machine) after the
    outputs are written, failing the launcher. Nothing to do in a single process.
    """
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def gather(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` in a single process)."""
    rank, world = rank_and_world()
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def shard(batches: Sequence[T], rank: int, world: int) -> list[T]:
    """Batch ``k`` goes to rank ``k % world``: a deterministic split that keeps every batch whole."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    return list(batches[rank::world])


def part_path(out: str | Path, rank: int, world: int) -> Path:
    """``OUT.part-00001-of-00002``: rank 1's part of a 2-process run."""
    out = Path(out)
    return out.with_name(f"{out.name}.part-{rank:05d}-of-{world:05d}")


def existing_parts(out: str | Path) -> dict[int, list[Path]]:
    """``{world size: [part files]}`` of the parts (and staged ``.new`` parts) beside ``out``."""
    out = Path(out)
    found: dict[int, list[Path]] = {}
    if not out.parent.is_dir():
        return found
    for p in sorted(out.parent.iterdir()):
        name = p.name.removesuffix(".meta.json").removesuffix(".new")
        if not name.startswith(out.name + ".part-"):
            continue
        m = _PART.search(name[len(out.name):])
        if m and name == part_path(out, int(m.group(1)), int(m.group(2))).name:
            found.setdefault(int(m.group(2)), []).append(p)
    return found


def check_parts(out: str | Path, world: int, *, overwrite: bool = False) -> None:
    """Refuse to run with ``world`` processes while parts of a run with another number are unmerged."""
    if overwrite:
        return
    other = {w: ps for w, ps in existing_parts(out).items() if w != world}
    if other:
        w = min(other)
        raise ShardMismatch(
            f"{out}: holds the unmerged parts of a {w}-process run ({other[w][0].name}, ...); "
            f"rerun with {w} processes to finish it (it resumes each part), or pass --overwrite to start over"
        )


def remove_parts(out: str | Path) -> None:
    """Delete every part (of any number of processes) beside ``out``, sidecars included."""
    for paths in existing_parts(out).values():
        for p in paths:
            p.unlink(missing_ok=True)


def _read_lines(path: Path, key: str) -> list[tuple[str, str]]:
    """``(key, line)`` of each complete line of a JSONL output (a half-written last line is ignored)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    data = data[: data.rfind(b"\n") + 1]
    return [(str(json.loads(line)[key]), line.decode("utf-8") + "\n") for line in data.split(b"\n") if line.strip()]


def done_keys(out: str | Path, settings: dict[str, Any], *, key: str = "id", overwrite: bool = False) -> set[str]:
    """Keys already in a (merged) output, read without touching it; refused when it has other settings.

    Every rank calls this before any rank writes, so all agree on what is left to do.
    """
    out = Path(out)
    if overwrite or not out.exists():
        return set()
    meta = meta_path(out)
    if not meta.exists():
        if out.stat().st_size > 0:
            raise SettingsMismatch(f"{out} exists but has no {meta.name}; use another output path or --overwrite")
        return set()
    old = json.loads(meta.read_text(encoding="utf-8")).get("settings", {})
    new = json.loads(dumps(settings))
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise SettingsMismatch(f"{out} was written with other settings (differ in: {', '.join(diff)}); "
                               "use another output path or --overwrite")
    return {k for k, _ in _read_lines(out, key)}


def merge_parts(
    out: str | Path,
    world: int,
    settings: dict[str, Any],
    *,
    order: Iterable[str],
    key: str = "id",
    overwrite: bool = False,
    schema: str | None = None,
    schema_version: int | None = None,
) -> Path:
    """Rank 0, after :func:`barrier`: ``OUT`` = its earlier records + every part, in ``order`` of the keys.

    ``order`` is the order in which a single process writes its lines (keys not
    in it keep their place at the end). ``OUT`` and its sidecar are staged
    beside it and renamed into place; the parts are removed only after that.
    """
    out = Path(out)
    if schema is not None and out.exists() and not overwrite:
        check_schema(out, schema, schema_version or 1)
    records = {} if overwrite else dict(_read_lines(out, key))
    for rank in range(world):
        for k, line in _read_lines(part_path(out, rank, world), key):
            records.setdefault(k, line)
    rank_of = {k: i for i, k in enumerate(dict.fromkeys(order))}
    keys = sorted(records, key=lambda k: (0, rank_of[k]) if k in rank_of else (1, 0))
    stamp = {} if schema is None else {"schema": schema, "schema_version": schema_version}
    staged = out.with_name(out.name + ".merge")
    write_atomic(meta_path(staged), dumps({"settings": json.loads(dumps(settings)), **stamp}) + "\n")
    write_atomic(staged, "".join(records[k] for k in keys))
    os.replace(meta_path(staged), meta_path(out))
    os.replace(staged, out)
    remove_parts(out)
    return out


__all__ = [
    "BARRIER_TIMEOUT", "ShardMismatch", "barrier", "check_parts", "done_keys", "existing_parts", "finish", "gather",
    "merge_parts", "part_path", "rank_and_world", "remove_parts", "shard",
]
