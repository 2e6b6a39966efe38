"""Teacher-logit cache: run the teacher once, train many students (or epochs) without it.

Layout of a cache folder ``DIR``:

* ``DIR/manifest.json`` -- what the cache holds (see :data:`MANIFEST_FIELDS`);
* ``DIR/shard-NNNNN.safetensors`` (``shard-rR-NNNNN.safetensors``: written by
  process ``R`` of a several-process run; read alike) -- tensors ``logprobs`` ``(n_tokens, k)``
  (teacher log-probs at temperature ``T``, sorted descending), ``ids``
  ``(n_tokens, k)`` token ids (uint16 when the teacher's vocabulary has at most
  65,536 ids, else int32: :func:`ids_dtype`), ``offsets`` ``(n_examples + 1,)`` int64:
  example ``j`` of the shard owns rows ``offsets[j]:offsets[j+1]``; the
  safetensors metadata ``keys`` is the JSON list of example keys
  (``"orig:<id>"`` / ``"cf:<id>"``). One row per loss token, in sequence order.

A teacher with another tokenizer (``--cross-tokenizer auto|gold``): every example is also rendered and
tokenized by the teacher (as live cross-tokenizer distillation does); the rows are the teacher's own loss
tokens, each shard also holds ``actual`` ``(n_tokens,)`` (the log-prob of the teacher's actual token at each
row, which merges a group of several teacher tokens), the manifest names ``cross_tokenizer`` and
``teacher_tokenizer_hash``, and ``DIR/teacher_tokenizer/`` holds the teacher's tokenizer, so that training
aligns the two tokenizations without the teacher (:class:`leaf.distill.aligned.TopKRows`, for ``gold`` and
``uld`` alike).

Writing is resumable: each shard is written to a temporary name and renamed
when complete; a rerun skips the examples of existing shards. A rerun with
other settings (teacher, k, T, data, tokenizer) is refused unless
``--overwrite``.

Training from the cache (``leaf distill --teacher-cache DIR``) checks that the
tokenizer, the tokenized examples and the temperature match the manifest, then
uses the tail-bucket KL of :class:`leaf.distill.losses.TopKTeacher` (exact up to
the teacher mass outside the top k; bound in :mod:`leaf.distill.losses`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leaf.data.jsonl import write_atomic
from leaf.data.records import source_bytes
from leaf.config import ConfigError, Summary, make, to_dict
from leaf.distill.config import CacheConfig

log = logging.getLogger(__name__)

FORMAT = "leaf-teacher-cache/1"
#: Mean teacher probability outside the cached top k above which a cache is almost surely not what was wanted.
TAIL_MASS_WARNING = 0.1
MANIFEST_FIELDS = (
    "format", "teacher", "tokenizer_hash", "data_hash", "examples_hash", "k", "temperature",
    "vocab_size", "include_eos", "max_length", "store_dtype", "examples", "tokens", "mean_tail_mass",
    "bytes_per_token", "cross_tokenizer", "teacher_tokenizer_hash",
)
#: Where a cross-tokenizer cache keeps the teacher's tokenizer.
TEACHER_TOKENIZER = "teacher_tokenizer"


def files_hash(paths: Sequence[Path | None]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(b"\0" if p is None else source_bytes(p))
        h.update(b"\1")
    return h.hexdigest()


def examples_hash(examples: Sequence[Any]) -> str:
    """sha256 of keys, input ids and labels (and, across tokenizers, the teacher's and the alignment): equal iff
    training sees the same token positions."""
    h = hashlib.sha256()
    for ex in examples:
        fields = [ex.key, ex.input_ids, ex.labels]
        if ex.teacher_input_ids is not None:
            fields += [ex.teacher_input_ids, ex.teacher_labels, ex.groups, ex.teacher_groups]
        h.update(json.dumps(fields).encode())
    return h.hexdigest()


def teacher_rows(example: Any) -> int:
    """Rows a cache holds for an example: its loss tokens, the teacher's own ones across tokenizers."""
    from leaf.batching import IGNORE_INDEX

    if example.teacher_labels is None:
        return int(example.n_loss_tokens)
    return sum(1 for y in example.teacher_labels[1:] if y != IGNORE_INDEX)


def ids_dtype(vocab: int) -> Any:
    """The narrowest dtype that holds every id of a ``vocab``-row output layer: uint16 up to 65,536, else int32."""
    import torch

    return torch.uint16 if vocab <= 1 << 16 else torch.int32


def bytes_per_token(out: Path, tokens: int) -> float:
    """Bytes of the shard files per cached loss token (log-probs, ids, offsets and headers together)."""
    return sum(p.stat().st_size for p in _shards(out)) / tokens if tokens else 0.0


def _shards(out: Path) -> list[Path]:
    return sorted(out.glob("shard-*.safetensors"))


@dataclass
class CacheSummary(Summary):
    out: Path
    examples: int
    tokens: int
    mean_tail_mass: float
    bytes_per_token: float = 0.0

    def line(self) -> str:
        return (f"cached the teacher's top-k of {self.tokens} tokens in {self.examples} examples "
                f"(mean mass outside the top k {self.mean_tail_mass:.4f}; {self.bytes_per_token:.0f} bytes per "
                f"token); wrote {self.out}")


def build_cache(config: CacheConfig | None = None, **kwargs: Any) -> CacheSummary:
    """Run the teacher over every example and store top-k log-probs of each loss token."""
    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm

    from leaf.distill.data import (
        DistillCollator,
        TokenizerMismatch,
        check_tokenizers,
        load_examples,
        model_vocab_size,
        tokenizer_fingerprint,
    )
    from leaf.distill.losses import loss_rows
    from leaf.batching import halving, length_batches, loss_positions, model_inputs, per_item_counts
    from leaf.heads import chunk_rows, final_hidden_states
    from leaf.models import input_device, load_model, load_tokenizer, use_packing

    config = make(CacheConfig, config, kwargs, "leaf.distill.build_cache()")
    out = Path(config.out)
    tokenizer = load_tokenizer(config.tokenizer or config.teacher)
    teacher_tokenizer = None  # another tokenizer: the teacher renders each sample itself
    if config.tokenizer and config.tokenizer != config.teacher and config.cross_tokenizer != "gold":
        # the cached ids are the teacher's: the student's tokenizer must name the same tokens (as live distill checks)
        try:
            check_tokenizers(tokenizer, load_tokenizer(config.teacher))
        except TokenizerMismatch:
            if config.cross_tokenizer == "off":
                raise TokenizerMismatch(
                    "the teacher's tokenizer differs from --tokenizer: the top-k cache stores ids of one vocabulary "
                    "unless --cross-tokenizer auto caches the teacher on its own tokens (then `leaf distill "
                    "--cross-tokenizer auto` trains from it)") from None
            teacher_tokenizer = load_tokenizer(config.teacher)
    elif config.cross_tokenizer == "gold":
        teacher_tokenizer = load_tokenizer(config.teacher)
    own = teacher_tokenizer or tokenizer  # the tokenizer of the cached ids
    if config.top_k > len(own):
        raise ConfigError(f"--top-k {config.top_k} is more than the {len(own)} tokens of the vocabulary")
    examples = load_examples(tokenizer, config.data, config.counterfactuals, include_eos=config.include_eos, max_length=config.max_length,
                             special_tokens=config.special_tokens_in_text, teacher_tokenizer=teacher_tokenizer)
    cross = teacher_tokenizer is not None
    settings = {
        "format": FORMAT,
        "teacher": config.teacher,
        "tokenizer_hash": tokenizer_fingerprint(tokenizer),
        "data_hash": files_hash([config.data, config.counterfactuals]),
        "examples_hash": examples_hash(examples),
        "k": config.top_k,
        "temperature": config.temperature,
        "include_eos": config.include_eos,
        "max_length": config.max_length,
        "store_dtype": config.store_dtype,
        "cross_tokenizer": "gold" if cross else None,
        "teacher_tokenizer_hash": tokenizer_fingerprint(teacher_tokenizer) if cross else None,
    }
    from leaf.distributed import barrier, gather, rank_and_world, shard as shard_of

    rank, world = rank_and_world()
    manifest_path = out / "manifest.json"
    if manifest_path.exists() and not config.overwrite:
        old = json.loads(manifest_path.read_text())
        differ = [k for k in settings if old.get(k) != settings[k]]
        if differ:
            raise ConfigError(f"{out} holds a cache with other settings ({', '.join(differ)}); use --overwrite or another --out")
    elif config.overwrite and rank == 0:
        for p in _shards(out):
            p.unlink()
    if world > 1:
        barrier()  # the old shards are gone (--overwrite) before anyone scans
    out.mkdir(parents=True, exist_ok=True)
    done: set[str] = set()
    for p in _shards(out):
        done.update(_shard_keys(p))
    todo = [ex for ex in examples if ex.key not in done]
    if world > 1:
        barrier()  # every process has scanned the shards before any writes one

    sharded = config.shard_models == "fsdp" and world > 1  # leaf.sharding: the forwards run in lockstep
    if sharded:
        from leaf.sharding import load_sharded

        teacher = load_sharded(config.teacher, dtype=config.dtype, device=config.device, what="teacher",
                               tokenizer=own, attn_implementation=config.attention)
    else:
        teacher = load_model(config.teacher, dtype=config.dtype, device=config.device, device_map=config.device_map,
                             max_memory=config.max_memory, what="teacher",
                             hint="use --device-map auto (with --max-memory) or a smaller --dtype", tokenizer=own,
                             attn_implementation=config.attention)
    vocab = model_vocab_size(teacher)
    manifest = {**settings, "vocab_size": vocab, "examples": len(examples), "tokens": sum(teacher_rows(e) for e in examples), "complete": False, "config": to_dict(config)}
    if rank == 0:
        if cross:
            teacher_tokenizer.save_pretrained(out / TEACHER_TOKENIZER)
        write_atomic(manifest_path, json.dumps(manifest, indent=2) + "\n")

    store, id_store = getattr(torch, config.store_dtype), ids_dtype(vocab)
    head = _output_head(teacher)
    skipped: list[str] = []

    def teacher_ids(e: Any) -> list[int]:
        """The ids the teacher reads: its own rendering across tokenizers."""
        return e.teacher_input_ids if cross else e.input_ids

    def topk_of(items: list[Any]) -> list[tuple[Any, ...]]:
        """Teacher top-k log-probs of each item's loss tokens; logits exist for one chunk of positions at a time."""
        batch = collate([{"input_ids": teacher_ids(e), "labels": e.teacher_labels if cross else e.labels,
                          "counterfactual": e.counterfactual, "index": 0} for e in items])
        dev = input_device(teacher)
        labels = batch["labels"]
        rows, targets = loss_rows(labels)
        inputs = model_inputs(batch, dev)
        with torch.no_grad():
            if head is not None:  # final hidden states of the loss positions only, the head a chunk at a time
                keep = torch.zeros_like(labels, dtype=torch.bool)
                keep[:, :-1] = loss_positions(labels)
                hidden = final_hidden_states(teacher, keep.to(dev), head, **inputs)
                n_rows, logits_of = hidden.shape[0], lambda sl: head(hidden[sl])
            else:  # an unknown final logit transform: the model's own logits
                flat = teacher(**inputs, use_cache=False).logits.flatten(0, 1)
                n_rows, logits_of = rows.numel(), lambda sl: flat[rows[sl].to(flat.device)]
            step = chunk_rows(vocab)
            lps, ids, actual = [], [], []
            for c0 in range(0, n_rows, step):  # one chunk of fp32 log-probs at a time
                z = logits_of(slice(c0, c0 + step)).float()
                if bool(torch.isnan(z).any() or torch.isposinf(z).any()):
                    from leaf.models import NonFiniteError

                    raise NonFiniteError(
                        f"{config.teacher}: the teacher's logits are not finite in a batch of "
                        f"{', '.join(e.key for e in items[:3])}{' ...' if len(items) > 3 else ''}; its forward pass "
                        "overflowed (check --dtype); the shards written so far are kept and a rerun resumes after them")
                full = torch.log_softmax(z / config.temperature, dim=-1)
                lp, ix = full.topk(config.top_k, dim=-1)
                lps.append(lp.to(store).cpu())
                ids.append(ix.to(id_store).cpu())
                if cross:  # the actual token's log-prob, kept in float32 (it multiplies along a merged group)
                    actual.append(full.gather(-1, targets[c0 : c0 + step].to(full.device).unsqueeze(-1)).squeeze(-1).cpu())
        lp_all, ids_all = torch.cat(lps), torch.cat(ids)
        act_all = torch.cat(actual) if cross else None
        out, start = [], 0
        for n in per_item_counts(labels, batch.get("segment")):
            got = (lp_all[start : start + n], ids_all[start : start + n])
            out.append(got + (act_all[start : start + n],) if act_all is not None else got)
            start += n
        return out

    def skip(example: Any, reason: str) -> None:
        log.warning("example %s not cached: %s", example.key, reason)
        skipped.append(example.key)

    collate = DistillCollator(own.pad_token_id, packed=use_packing(config.packing, teacher))
    # Several processes: shard-file k of what is left goes to process k % world, written as shard-rR-NNNNN
    # (its own names, so processes never collide); one process keeps shard-NNNNN.
    prefix = "shard-" if world == 1 else f"shard-r{rank}-"
    chunks = shard_of([todo[s0 : s0 + config.shard_size] for s0 in range(0, len(todo), config.shard_size)], rank, world)
    next_shard = max((int(p.stem[len(prefix):]) for p in _shards(out) if p.stem[len(prefix):].isdigit()
                      and p.stem.startswith(prefix)), default=-1) + 1
    bar = tqdm(total=sum(len(c) for c in chunks), desc="teacher top-k", unit="ex", disable=not chunks)
    if sharded:  # every process runs as many forwards as the busiest one, counted before any runs
        from leaf.sharding import lockstep_steps

        forwards = sum(len(length_batches([len(teacher_ids(e)) for e in c], config.batch_size,
                                          config.max_tokens_per_batch)) for c in chunks)
        padding = lockstep_steps(forwards) - forwards
    for shard in chunks:
        per_key: dict[str, tuple[Any, ...]] = {}
        for group in length_batches([len(teacher_ids(e)) for e in shard], config.batch_size, config.max_tokens_per_batch):
            items = [shard[i] for i in group]
            for e, got in zip(items, topk_of(items) if sharded else halving(items, topk_of, skip)):
                if got is not None:
                    per_key[e.key] = got
            bar.update(len(items))
        if any(e.key not in per_key for e in shard):
            shard = [e for e in shard if e.key in per_key]  # skipped examples are left out (and counted)
            if not shard:
                continue
        keys = [e.key for e in shard]
        offsets = torch.tensor([0] + [per_key[k][0].shape[0] for k in keys]).cumsum(0)
        tensors = {
            "logprobs": torch.cat([per_key[k][0] for k in keys]).contiguous(),
            "ids": torch.cat([per_key[k][1] for k in keys]).contiguous(),
            "offsets": offsets.to(torch.int64),
        }
        if cross:
            tensors["actual"] = torch.cat([per_key[k][2] for k in keys]).float().contiguous()
        final = out / f"{prefix}{next_shard:05d}.safetensors"
        tmp = final.with_suffix(".tmp")
        tail = float((1 - tensors["logprobs"].float().exp().sum(-1)).clamp(min=0).sum())
        save_file(tensors, str(tmp), metadata={"keys": json.dumps(keys), "tail_mass_sum": repr(tail)})
        tmp.rename(final)
        next_shard += 1
    if sharded:
        for _ in range(padding):  # results discarded
            topk_of(todo[:1])
    bar.close()
    if world > 1:
        skipped = [k for part in gather(skipped) for k in part]
        barrier()  # every shard file is in place
        if rank != 0:
            barrier()  # process 0 writes the manifest
            return CacheSummary(out, manifest["examples"], manifest["tokens"], _mean_tail_mass(out),
                                bytes_per_token(out, manifest["tokens"]))
    manifest["mean_tail_mass"] = _mean_tail_mass(out)
    manifest["bytes_per_token"] = bytes_per_token(out, manifest["tokens"])
    if manifest["mean_tail_mass"] > TAIL_MASS_WARNING:
        log.warning("%s: the top %d keep only %.0f%% of the teacher's probability on average (the KL treats the "
                    "rest as one bucket); raise --top-k or check --temperature", out, config.top_k,
                    100 * (1 - manifest["mean_tail_mass"]))
    manifest["complete"] = True
    manifest["skipped"] = skipped
    write_atomic(manifest_path, json.dumps(manifest, indent=2) + "\n")
    if world > 1:
        barrier()
    return CacheSummary(out, manifest["examples"], manifest["tokens"], manifest["mean_tail_mass"],
                        manifest["bytes_per_token"])


def _output_head(model: Any) -> Any:
    """The model's chunkable output head, or ``None`` for an unknown final logit transform (full logits then)."""
    from leaf.heads import output_head

    try:
        return output_head(model)
    except NotImplementedError as exc:
        log.warning("chunked output head unavailable (%s); caching from full logits", exc)
        return None


def _mean_tail_mass(out: Path) -> float:
    """Mean teacher probability outside the top k over all cached tokens (from the shards' metadata)."""
    from safetensors import safe_open

    total, rows = 0.0, 0
    for p in _shards(out):
        with safe_open(str(p), framework="pt") as fh:
            total += float(fh.metadata().get("tail_mass_sum", "nan"))
            rows += fh.get_slice("ids").get_shape()[0]
    return total / max(rows, 1)


def _shard_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return json.loads(fh.metadata()["keys"])


class TeacherCache:
    """Read access to a cache folder: ``get(key) -> (logprobs (n, k), ids (n, k))``."""

    def __init__(self, root: Path, manifest: dict[str, Any], index: dict[str, tuple[Path, int, int]]):
        self.root, self.manifest, self.index = root, manifest, index
        self._open: dict[Path, Any] = {}

    @classmethod
    def open(cls, root: str | Path) -> TeacherCache:
        from safetensors import safe_open

        root = Path(root)
        path = root / "manifest.json"
        if not path.exists():
            raise ConfigError(f"{root}: not a teacher cache (no manifest.json); build it with `leaf cache-teacher`")
        manifest = json.loads(path.read_text())
        if manifest.get("format") != FORMAT:
            raise ConfigError(f"{path}: unknown cache format {manifest.get('format')!r}")
        if not manifest.get("complete"):
            raise ConfigError(f"{root}: the cache is incomplete; rerun `leaf cache-teacher` with the same options to finish it")
        index: dict[str, tuple[Path, int, int]] = {}
        for shard in _shards(root):
            with safe_open(str(shard), framework="pt") as fh:
                keys = json.loads(fh.metadata()["keys"])
                offsets = fh.get_tensor("offsets").tolist()
            for j, k in enumerate(keys):
                index[k] = (shard, offsets[j], offsets[j + 1])
        return cls(root, manifest, index)

    def check(self, tokenizer: Any, examples: Sequence[Any], temperature: float, data: Any = None, counterfactuals: Any = None) -> None:
        """Refuse to train on a cache that does not describe these examples at this temperature."""
        from leaf.distill.data import tokenizer_fingerprint

        m = self.manifest
        problems = []
        if m["tokenizer_hash"] != tokenizer_fingerprint(tokenizer):
            problems.append("the student's tokenizer differs from the one the cache was built with")
        if m["examples_hash"] != examples_hash(examples):
            problems.append("the tokenized training examples differ (other data, template, include_eos or max_length)")
        if float(m["temperature"]) != float(temperature):
            problems.append(f"the cache holds log-probs at temperature {m['temperature']}, training asks for {temperature}")
        missing = [e.key for e in examples if e.key not in self.index]
        if missing:
            oom = set(m.get("skipped", [])) & set(missing)
            why = f" ({len(oom)} skipped when they ran out of memory even alone)" if oom else ""
            problems.append(f"{len(missing)} example(s) are not in the cache{why}, e.g. {missing[:3]}")
        if problems:
            raise ConfigError(f"{self.root}: cannot train from this teacher cache: " + "; ".join(problems))

    def get(self, key: str) -> tuple[Any, Any]:
        fh, a, b = self._rows(key)
        return fh.get_slice("logprobs")[a:b], fh.get_slice("ids")[a:b]

    def _rows(self, key: str) -> tuple[Any, int, int]:
        """The open shard holding ``key`` (opened once) and the example's row range in it."""
        from safetensors import safe_open

        shard, a, b = self.index[key]
        fh = self._open.get(shard)
        if fh is None:
            fh = self._open[shard] = safe_open(str(shard), framework="pt")
        return fh, a, b

    @property
    def cross_tokenizer(self) -> str | None:
        """The alignment a cache of a teacher with another tokenizer was made for (``gold``); None: one tokenizer."""
        return self.manifest.get("cross_tokenizer")

    def teacher_tokenizer(self) -> Any:
        """The teacher's tokenizer a cross-tokenizer cache keeps beside its shards."""
        from leaf.models import load_tokenizer

        return load_tokenizer(str(self.root / TEACHER_TOKENIZER))

    def actual(self, key: str) -> Any:
        """``(n,)`` log-prob of the teacher's actual token at each row (cross-tokenizer caches)."""
        fh, a, b = self._rows(key)
        return fh.get_slice("actual")[a:b]

    def __getstate__(self) -> dict[str, Any]:  # picklable for data-loader workers
        return {"root": self.root, "manifest": self.manifest, "index": self.index}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], state["manifest"], state["index"])


@dataclass
class CachedCollator:
    """Wraps :class:`~leaf.distill.data.DistillCollator`; adds ``topk_logprobs`` / ``topk_ids`` ``(N, k)`` (and
    ``topk_actual`` ``(N,)`` across tokenizers, ``N`` then counting the teacher's loss tokens)."""

    base: Any
    cache: TeacherCache
    dataset: Any

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = self.base(items)
        cross = self.cache.cross_tokenizer is not None
        lps, ids, actual = [], [], []
        for it in items:
            ex = self.dataset.examples[int(it["index"])]
            lp, ix = self.cache.get(ex.key)
            if lp.shape[0] != teacher_rows(ex):
                raise ConfigError(f"teacher cache: {ex.key} has {lp.shape[0]} rows, the example {teacher_rows(ex)} "
                                  f"{'teacher ' if cross else ''}loss tokens")
            lps.append(lp)
            ids.append(ix)
            if cross:
                actual.append(self.cache.actual(ex.key))
        batch["topk_logprobs"] = torch.cat(lps)
        batch["topk_ids"] = torch.cat(ids).long()
        if cross:
            batch["topk_actual"] = torch.cat(actual)
        return batch
