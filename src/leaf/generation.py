"""Generate answers to instructions, batched, on the model's chat template.

:func:`generate` is the one entry point every stage uses (evaluation,
labelling). Prompts are rendered with :func:`leaf.data.render.render_prompt`
and tokenised without extra special tokens (the template carries BOS), padded
on the left so every row's prompt ends where generation starts; transformers
derives position ids from the attention mask, so a padded row generates
exactly what it would alone. Prompts are sorted by length before batching
(less padding); results come back in input order.

Backends: a transformers model (always), or a ``vllm.LLM`` (the ``vllm`` extra;
:func:`load_generator` picks it when vLLM is importable *and* a CUDA GPU is
present). Both return the same thing: the decoded continuation, special
tokens removed, cut at the first stop string (the stop string excluded).

:func:`generate_to_jsonl` writes generations as they finish to a resumable
JSONL file (``leaf.data.jsonl.ResumableJsonl``), so a killed job resumes
where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from leaf.batching import halving, length_batches, pad
from leaf.data.render import render_prompt

log = logging.getLogger(__name__)

BACKENDS = ("auto", "hf", "vllm")
VLLM_CHUNK = 512  # prompts per vLLM call


#: The decoding options that shape generations (a resumed file must match them).
DECODING = ("do_sample", "temperature", "top_p", "seed")


def decoding_options(config: Any) -> dict[str, Any]:
    """The :data:`DECODING` options of any stage config that generates (label, evaluate, ...)."""
    out = {name: getattr(config, name) for name in DECODING}
    if getattr(config, "special_tokens_in_text", "warn") == "escape":  # other prompt ids: part of the settings
        out["escape_special"] = True
    return out


def truncate_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop string."""
    if not stop:
        return text
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if 0 <= i < cut:
                cut = i
    return text[:cut]


def is_vllm_model(model: Any) -> bool:
    return type(model).__module__.split(".")[0] == "vllm"


def vllm_usable() -> bool:
    """vLLM is installed and a CUDA GPU is present."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def load_generator(
    name_or_path: str,
    *,
    backend: str = "auto",
    dtype: str = "auto",
    device: str = "auto",
    max_model_len: int | None = None,
) -> tuple[Any, Any]:
    """(model, tokenizer) for :func:`generate`: a ``vllm.LLM`` or a transformers model.

    ``backend="auto"`` takes vLLM when :func:`vllm_usable`, else transformers.
    """
    from leaf.models import load_model, load_tokenizer

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    tok = load_tokenizer(name_or_path)
    use_vllm = backend == "vllm" or (backend == "auto" and vllm_usable())
    if use_vllm:
        if not vllm_usable():
            raise RuntimeError("backend 'vllm' needs the vllm package (pip install 'leaf[vllm]') and a CUDA GPU")
        from vllm import LLM

        from leaf.gguf import resolve

        name_or_path = resolve(name_or_path)  # vLLM reads the converted folder of a .gguf source

        kwargs: dict[str, Any] = {"model": name_or_path, "dtype": "auto" if dtype == "auto" else dtype}
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        return LLM(**kwargs), tok
    return load_model(name_or_path, dtype=dtype, device=device, tokenizer=tok), tok


def _encode_prompts(tokenizer: Any, instructions: Sequence[str], escape_special: bool = False) -> list[list[int]]:
    """Token ids of each generation prompt; with ``escape_special`` the instruction's control-token strings are
    tokenised as ordinary text (the template's own control tokens stay control tokens)."""
    prompts = [render_prompt(tokenizer, ins) for ins in instructions]
    if escape_special:
        from leaf.data.render import prompt_instruction_span
        from leaf.data.special import encode_parts

        return [encode_parts(tokenizer, p, [prompt_instruction_span(tokenizer, ins, p)])[0]
                for p, ins in zip(prompts, instructions)]
    return [list(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]


def generate(
    model: Any,
    tokenizer: Any,
    instructions: list[str],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    max_tokens_per_batch: int | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    stop: list[str] | None = None,
    seed: int = 0,
    on_batch: Callable[[list[int], list[str]], None] | None = None,
    progress: bool = False,
    escape_special: bool = False,
    synced_gpus: bool = False,
) -> list[str]:
    """The model's answer to each instruction (greedy unless ``do_sample``).

    ``synced_gpus``: the model is sharded over the processes (FSDP / ZeRO-3); every process keeps stepping
    until all have finished (transformers' ``synced_gpus``), so they call it together.

    ``on_batch(indices, texts)`` is called as each batch finishes (indices into
    ``instructions``), which is how :func:`generate_to_jsonl` writes as it goes.
    Batches hold prompts of similar length, at most ``batch_size`` of them and,
    with ``max_tokens_per_batch``, at most that many tokens counting the prompt
    and the tokens to generate; a batch that runs out of memory halves itself.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if not instructions:
        return []
    ids = _encode_prompts(tokenizer, instructions, escape_special)
    if is_vllm_model(model):
        return _generate_vllm(model, ids, max_new_tokens, do_sample, temperature, top_p, stop, seed, on_batch)
    batches = length_batches([len(x) + max_new_tokens for x in ids], batch_size, max_tokens_per_batch,
                             longest_first=True)
    return _generate_hf(
        model, tokenizer, ids, max_new_tokens, batches, do_sample, temperature, top_p, stop, seed, on_batch, progress,
        synced_gpus,
    )


def _generate_hf(
    model: Any,
    tokenizer: Any,
    ids: list[list[int]],
    max_new_tokens: int,
    batches: list[list[int]],
    do_sample: bool,
    temperature: float,
    top_p: float,
    stop: list[str] | None,
    seed: int,
    on_batch: Callable[[list[int], list[str]], None] | None,
    progress: bool,
    synced_gpus: bool = False,
) -> list[str]:
    import torch
    from tqdm.auto import tqdm

    from leaf.models import input_device

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token; cannot pad a batch")
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    device = input_device(model)
    gen_kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "pad_token_id": pad_id,
        "eos_token_id": eos,
    }
    if synced_gpus:
        gen_kwargs["synced_gpus"] = True
    if do_sample:
        gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    else:
        # The model's own generation_config may ask for sampling; greedy means greedy.
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    if stop:
        gen_kwargs.update(stop_strings=list(stop), tokenizer=tokenizer)
    gen_kwargs["logits_processor"] = [_finite_logits(getattr(model, "name_or_path", "") or type(model).__name__)]

    out: list[str | None] = [None] * len(ids)
    torch.manual_seed(seed)
    def run(batch: list[int]) -> list[str]:
        input_ids, mask = pad([ids[i] for i in batch], pad_id, side="left")
        width = input_ids.shape[1]
        with torch.no_grad():
            seqs = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), **gen_kwargs)
        texts = []
        for row in range(len(batch)):
            text = tokenizer.decode(_until_eos(seqs[row, width:].tolist(), eos), skip_special_tokens=True)
            texts.append(truncate_at_stop(text, stop))
        if on_batch is not None:
            on_batch(list(batch), texts)
        return texts

    def skip(i: int, reason: str) -> None:
        log.warning("prompt %d not generated: %s", i, reason)

    for batch in tqdm(batches, desc="generate", unit="batch", disable=not progress):
        for i, text in zip(batch, halving(batch, run, skip)):
            out[i] = text
    return [t if t is not None else "" for t in out]


def _finite_logits(name: str) -> Any:
    """A logits processor that stops generation on NaN or +inf logits, naming the model: a model that
    overflows would otherwise answer with token 0 at every step and be scored wrong without a word."""
    import torch
    from transformers import LogitsProcessor

    from leaf.models import NonFiniteError

    class FiniteLogits(LogitsProcessor):
        def __init__(self) -> None:
            self.step = 0

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            self.step += 1
            if bool(torch.isnan(scores).any() or torch.isposinf(scores).any()):
                raise NonFiniteError(
                    f"{name}: the model's logits are not finite at generated token {self.step}; its forward pass "
                    "overflowed (check --dtype); the answers written so far are kept and a rerun resumes after them")
            return scores

    return FiniteLogits()


def _until_eos(tokens: list[int], eos: int | list[int] | None) -> list[int]:
    """Tokens before the first EOS (rows that finished early are padded after it)."""
    stops = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
    for k, t in enumerate(tokens):
        if t in stops:
            return tokens[:k]
    return tokens


def _generate_vllm(
    llm: Any,
    ids: list[list[int]],
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_p: float,
    stop: list[str] | None,
    seed: int,
    on_batch: Callable[[list[int], list[str]], None] | None,
) -> list[str]:
    from vllm import SamplingParams

    params = SamplingParams(
        max_tokens=max_new_tokens,
        temperature=temperature if do_sample else 0.0,
        top_p=top_p if do_sample else 1.0,
        stop=list(stop) if stop else None,
        seed=seed,
        skip_special_tokens=True,
    )
    # Token ids, not text: vLLM would add a second BOS to a templated prompt.
    # vLLM schedules its own batches; chunks only bound how much a crash loses (see generate_to_jsonl).
    texts: list[str] = []
    for start in range(0, len(ids), VLLM_CHUNK):
        chunk = [{"prompt_token_ids": p} for p in ids[start : start + VLLM_CHUNK]]
        done = [truncate_at_stop(r.outputs[0].text, stop) for r in llm.generate(chunk, params)]
        texts += done
        if on_batch is not None:
            on_batch(list(range(start, start + len(done))), done)
    return texts


def generate_to_jsonl(
    model: Any,
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    out: str | Path,
    *,
    settings: dict[str, Any],
    field: str = "generation",
    instruction_field: str = "instruction",
    overwrite: bool = False,
    load: Callable[[], tuple[Any, Any]] | None = None,
    **generate_kwargs: Any,
) -> dict[str, str]:
    """Generate for every record not yet in ``out``; append each as its batch finishes.

    With ``load`` (a function returning ``(model, tokenizer)``), ``model`` and ``tokenizer`` may be None:
    they are loaded only when something is left to generate, so a rerun whose answers are all on disk
    loads no model.

    Each output line is the input record plus ``field`` (the generation).
    ``settings`` (model, decoding options...) go to ``out.meta.json``; resuming
    with other settings is refused. Returns ``{id: generation}`` for all
    records, old and new.
    """
    from leaf.data.jsonl import ResumableJsonl, read_jsonl
    from leaf.distributed import check_parts, rank_and_world, remove_parts

    rank, world = rank_and_world()
    check_parts(out, world, overwrite=overwrite)  # unmerged parts of a run with another number of processes
    loaded: list[Any] = [model, tokenizer]

    def models() -> tuple[Any, Any]:
        if load is not None and loaded[0] is None:
            loaded[:] = load()
        return loaded[0], loaded[1]

    if world > 1:
        return _generate_sharded(models, records, Path(out), settings, field, instruction_field, overwrite,
                                 rank, world, generate_kwargs)
    writer = ResumableJsonl(out, settings, overwrite=overwrite)
    todo = [r for r in records if str(r["id"]) not in writer.done]
    if len(todo) < len(records):
        log.info("%s: %d of %d already generated, resuming", out, len(records) - len(todo), len(records))

    def write(indices: list[int], texts: list[str]) -> None:
        writer.write_batch({**todo[i], field: t} for i, t in zip(indices, texts))

    if todo:
        generate(*models(), [r[instruction_field] for r in todo], on_batch=write, **generate_kwargs)
    wanted = {str(r["id"]) for r in records}
    result = {str(r["id"]): r[field] for r in read_jsonl(writer.commit()) if str(r["id"]) in wanted}
    if overwrite:
        remove_parts(out)  # unmerged parts of an earlier several-process run are now stale
    return result


def _generate_sharded(models: Callable[[], tuple[Any, Any]], records: Sequence[dict[str, Any]], out: Path,
                      settings: dict[str, Any], field: str, instruction_field: str, overwrite: bool, rank: int,
                      world: int, generate_kwargs: dict[str, Any]) -> dict[str, str]:
    """One of ``world`` processes: the batches a single process would run over what ``out`` lacks, batch ``k``
    on rank ``k % world``, into ``out.part-RRRRR-of-NNNNN`` (resumable); rank 0 merges the parts into ``out``
    in the order a single process writes. Every rank returns the whole ``{id: generation}``."""
    from leaf.data.jsonl import ResumableJsonl, read_jsonl
    from leaf.distributed import barrier, done_keys, merge_parts, part_path, remove_parts, shard

    out_done = done_keys(out, settings, overwrite=overwrite)
    base = [r for r in records if str(r["id"]) not in out_done]
    wanted = {str(r["id"]) for r in records}
    if base:
        model, tokenizer = models()
        ids = _encode_prompts(tokenizer, [r[instruction_field] for r in base], generate_kwargs.get("escape_special", False))
        if is_vllm_model(model):  # vLLM takes the prompts in chunks, in input order
            batches = [list(range(s, min(s + VLLM_CHUNK, len(ids)))) for s in range(0, len(ids), VLLM_CHUNK)]
        else:  # exactly the batches generate() forms for these prompts
            new = generate_kwargs.get("max_new_tokens", 256)
            batches = length_batches([len(x) + new for x in ids], generate_kwargs.get("batch_size", 8),
                                     generate_kwargs.get("max_tokens_per_batch"), longest_first=True)
        writer = ResumableJsonl(part_path(out, rank, world), settings, overwrite=overwrite)
        # in a single process's order; generate() re-forms the same batches from it (longest first, the count
        # and token bounds depend on the first item of each batch only)
        mine = [base[i] for b in shard(batches, rank, world) for i in b]
        todo = [r for r in mine if str(r["id"]) not in writer.done]
        if len(todo) < len(mine):
            log.info("%s: %d of %d already generated, resuming", writer.path, len(mine) - len(todo), len(mine))

        def write(indices: list[int], texts: list[str]) -> None:
            writer.write_batch({**todo[i], field: t} for i, t in zip(indices, texts))

        if todo:
            generate(model, tokenizer, [r[instruction_field] for r in todo], on_batch=write, **generate_kwargs)
        writer.commit()
        barrier()
        if rank == 0:
            merge_parts(out, world, settings, order=[str(base[i]["id"]) for b in batches for i in b],
                        overwrite=overwrite)
        barrier()  # out is in place before any rank reads it
    elif rank == 0:
        remove_parts(out)  # out holds everything already (a merge that stopped before removing them)
    if not out.exists():
        return {}
    return {str(r["id"]): r[field] for r in read_jsonl(out) if str(r["id"]) in wanted}
