"""Training examples for distillation: originals and counterfactuals, tokenized once, padded per batch.

An :class:`Example` is one rendered sample (chat template of the *student*
tokenizer, via :func:`leaf.data.render.render`) with HF-style ``labels``:
the token id on tokens that carry the loss, ``-100`` elsewhere.

Which tokens carry the loss:

* the response tokens (every token overlapping the response's characters);
* for records with ``loss_start`` (response-level counterfactuals), only the
  tokens overlapping ``response[loss_start:]``;
* plus the end-of-turn token right after the response (``<|eot_id|>``,
  ``<|im_end|>``, EOS of the plain template) when it is a special token and
  ``include_eos`` is on (the default): this is what SFT does, and it teaches
  the student where to stop. Tokens after it (a newline of ChatML) never count.

The teacher sees exactly the tokens the student sees, so both models must
share one tokenizer (:func:`check_tokenizers`); models whose embedding
matrices are padded to different sizes compare logits over the shared ids
(:func:`shared_vocab_size`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from leaf.batching import IGNORE_INDEX, pack, pad
from leaf.config import ConfigError
from leaf.data.counterfactuals import read_counterfactuals
from leaf.data.records import DataError, Sample, id_key, load_samples, record_locations
from leaf.data.render import encode, render

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Example:
    """One tokenized training example.

    ``key`` is ``"orig:<id>"`` or ``"cf:<id>"`` (unique over a run; the teacher
    cache is keyed by it); ``labels`` has ``IGNORE_INDEX`` where no loss is taken.
    """

    key: str
    input_ids: list[int]
    labels: list[int]
    counterfactual: bool
    source: str = ""  #: id of the original sample it comes from (a counterfactual's source_id); "" = its own key
    #: cross-tokenizer runs: the teacher's own rendering, its labels (the tokens of aligned groups), and the group
    #: index of each student / teacher loss token (in position order); None with one tokenizer
    teacher_input_ids: list[int] | None = None
    teacher_labels: list[int] | None = None
    groups: list[int] | None = None
    teacher_groups: list[int] | None = None
    #: on-policy runs (``--student-responses``): the example's own instruction, and the instruction the student
    #: answers when its response is replaced by the student's (None: it always keeps its reference response)
    instruction: str | None = None
    prompt: str | None = None

    @property
    def group(self) -> str:
        """What --eval-split holds out together: an original sample and every counterfactual made from it."""
        return self.source or self.key

    @property
    def n_loss_tokens(self) -> int:
        """Loss tokens (positions 1.. with a label; position 0 is never predicted)."""
        return sum(1 for y in self.labels[1:] if y != IGNORE_INDEX)


def build_example(
    tokenizer: Any,
    sample: Sample,
    *,
    counterfactual: bool = False,
    loss_start: int | None = None,
    include_eos: bool = True,
    max_length: int | None = None,
    source: str = "",
    escape_special: bool = False,
) -> Example | None:
    """Render, tokenize and mask one sample; ``None`` when truncation leaves no loss token."""
    rendered = render(tokenizer, sample.instruction, sample.response)
    enc = encode(tokenizer, rendered.text, (rendered.instruction_span, rendered.response_span) if escape_special else ())
    start = 0 if loss_start is None else loss_start
    lo, hi = rendered.response_to_text(start, len(sample.response))
    loss_tokens = set(enc.tokens_in([(lo, hi)]))
    if include_eos:
        special = set(tokenizer.all_special_ids)
        end = rendered.response_span[1]
        after = [i for i, (s, _e) in enumerate(enc.offsets) if s >= end]
        if after and enc.input_ids[after[0]] in special:
            loss_tokens.add(after[0])
    ids = list(enc.input_ids)
    labels = [t if i in loss_tokens else IGNORE_INDEX for i, t in enumerate(ids)]
    if max_length is not None and len(ids) > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
    prefix = "cf" if counterfactual else "orig"
    ex = Example(f"{prefix}:{id_key(sample.id)}", ids, labels, counterfactual, source)
    return ex if ex.n_loss_tokens > 0 else None


def _loss_region(tokenizer: Any, sample: Sample, start: int, escape: bool, include_eos: bool,
                 max_length: int | None) -> tuple[list[int], list[tuple[int, int]], list[int], int | None]:
    """One model's rendering: ids, offsets in the response field, response loss tokens, its end-of-turn loss token."""
    rendered = render(tokenizer, sample.instruction, sample.response)
    enc = encode(tokenizer, rendered.text, (rendered.instruction_span, rendered.response_span) if escape else ())
    lo, hi = rendered.response_to_text(start, len(sample.response))
    limit = len(enc.input_ids) if max_length is None else min(max_length, len(enc.input_ids))
    tokens = [t for t in enc.tokens_in([(lo, hi)]) if 0 < t < limit]
    from leaf.distill.align import byte_offsets, token_bytes

    spelled = _spellings(tokenizer, token_bytes)
    # byte offsets into the response field (a token's part before the response is clipped by the alignment)
    r0 = rendered.response_span[0] - rendered.response_offset
    field = " " * max(rendered.response_offset, 0) + rendered.text[rendered.response_span[0]:]
    rel = [(max(a - r0, 0), max(b - r0, 0)) for a, b in enc.offsets]
    offsets = byte_offsets(field, rel, [spelled.get(i) for i in enc.input_ids])
    end = rendered.response_span[1]
    after = [i for i, (a, _b) in enumerate(enc.offsets) if a >= end]
    eos = after[0] if include_eos and after and after[0] < limit and enc.input_ids[after[0]] in set(
        tokenizer.all_special_ids) else None
    return list(enc.input_ids[:limit]), offsets, tokens, eos


_SPELLINGS: dict[int, dict[int, bytes]] = {}


def _spellings(tokenizer: Any, token_bytes: Any) -> dict[int, bytes]:
    """:func:`leaf.distill.align.token_bytes` of a tokenizer, computed once per tokenizer object."""
    key = id(tokenizer)
    if key not in _SPELLINGS:
        _SPELLINGS[key] = token_bytes(tokenizer)
    return _SPELLINGS[key]


def build_pair_example(student_tokenizer: Any, teacher_tokenizer: Any, sample: Sample, *, counterfactual: bool = False,
                       loss_start: int | None = None, include_eos: bool = True, max_length: int | None = None,
                       source: str = "", escape_special: bool = False) -> Example | None:
    """An example for a teacher with another tokenizer: each model's own rendering, aligned on the response.

    The loss tokens of both sides are the tokens of the groups of :func:`leaf.distill.align.align_groups` over
    ``response[loss_start:]`` (a group cut by truncation is dropped), plus the two end-of-turn tokens as one last
    group. ``None`` when nothing aligned is left.
    """
    from leaf.distill.align import align_groups

    start = 0 if loss_start is None else loss_start
    s_ids, s_off, s_tok, s_eos = _loss_region(student_tokenizer, sample, start, escape_special, include_eos, max_length)
    t_ids, t_off, t_tok, t_eos = _loss_region(teacher_tokenizer, sample, start, escape_special, include_eos, max_length)
    lo, hi = len(sample.response[:start].encode()), len(sample.response.encode())
    groups = align_groups(s_off, s_tok, t_off, t_tok, lo, hi)
    s_last, t_last = (s_tok[-1] if s_tok else -1), (t_tok[-1] if t_tok else -1)
    if groups and (groups[-1].student[-1] != s_last or groups[-1].teacher[-1] != t_last):
        groups.pop()  # defensive: never keep a group whose tokens a side lacks
    pairs = [(list(g.student), list(g.teacher)) for g in groups]
    if s_eos is not None and t_eos is not None and pairs:
        pairs.append(([s_eos], [t_eos]))
    s_lab, t_lab = [IGNORE_INDEX] * len(s_ids), [IGNORE_INDEX] * len(t_ids)
    s_grp, t_grp = [], []
    for k, (ss, ts) in enumerate(pairs):
        for i in ss:
            s_lab[i] = s_ids[i]
            s_grp.append(k)
        for i in ts:
            t_lab[i] = t_ids[i]
            t_grp.append(k)
    if not pairs:
        return None
    prefix = "cf" if counterfactual else "orig"
    return Example(f"{prefix}:{id_key(sample.id)}", s_ids, s_lab, counterfactual, source, t_ids, t_lab, s_grp, t_grp)


def _check_loss_start(samples: Sequence[Sample], path: str | Path) -> list[int | None]:
    places = record_locations(path) if any(s.extra.get("loss_start") is not None for s in samples) else {}
    problems, starts = [], []
    for s in samples:
        where = places.get(id_key(s.id), f"{path}: sample {s.id!r}")
        value = s.extra.get("loss_start")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{where}: field 'loss_start': must be an integer or null, got {value!r}")
        elif value is not None and not 0 <= value < len(s.response):
            problems.append(f"{where}: field 'loss_start': {value} is outside the response (length {len(s.response)})")
        starts.append(value)
    if problems:
        raise DataError(problems)
    return starts


def _student_prompt(record: Any, mode: str | None, source_text: dict[str, str]) -> str | None:
    """What the student answers for a drawn counterfactual record (``--student-prompt``); None when the record
    keeps its reference response (its loss or its pruning is in the response)."""
    if record.loss_start is not None or record.level == "response" or any(
            r.field != "instruction" for r in record.removed):
        return None
    if mode == "source" and record.source_id is not None:
        return source_text.get(id_key(record.source_id), record.instruction)
    return record.instruction


def load_examples(
    tokenizer: Any,
    data: str | Path | None,
    counterfactuals: str | Path | None = None,
    *,
    include_eos: bool = True,
    max_length: int | None = 4096,
    special_tokens: str = "warn",
    teacher_tokenizer: Any = None,
    student_prompt: str | None = None,
) -> list[Example]:
    """Examples of the original samples (``data``) followed by the counterfactual records.

    ``student_prompt`` (on-policy runs): also keep each example's instruction and the one the student answers
    in its place (:mod:`leaf.distill.onpolicy`): ``source`` = a counterfactual's original instruction (its
    ``source_id`` among the originals; else its own), ``own`` = its own. Records whose loss covers part of the
    response (``loss_start``, response-level pruning) keep their reference response (no prompt).

    ``teacher_tokenizer``: a teacher with another tokenizer (:func:`build_pair_example`); None: one tokenizer.
    ``special_tokens``: what to do with control-token strings inside a sample's text
    (:mod:`leaf.data.special`: ``warn``, ``escape`` or ``error``).

    Originals may also carry ``loss_start``. A counterfactual whose
    ``source_id`` is not among the originals is kept (with a warning): its own
    instruction and response are all that the loss needs.
    """
    examples: list[Example] = []
    dropped = 0
    source_ids: set[str] = set()
    parts: list[tuple[list[Sample], list[int | None], bool, list[str]]] = []
    prompts: list[list[str | None]] = []
    source_text: dict[str, str] = {}
    if data is not None:
        originals = load_samples(data)
        source_ids = {id_key(s.id) for s in originals}
        source_text = {id_key(s.id): s.instruction for s in originals}
        starts = _check_loss_start(originals, data)
        parts.append((originals, starts, False, [id_key(s.id) for s in originals]))
        prompts.append([s.instruction if start is None else None for s, start in zip(originals, starts)])
    if counterfactuals is not None:
        records = read_counterfactuals(counterfactuals)
        orphans = [r.id for r in records if r.source_id is not None and id_key(r.source_id) not in source_ids]
        if orphans and source_ids:
            log.warning("%s: %d counterfactual(s) whose source_id is not in the original data", counterfactuals,
                        len(orphans))
        sources = [id_key(r.source_id) if r.source_id is not None else f"cf:{id_key(r.id)}" for r in records]
        parts.append(([r.as_sample() for r in records], [r.loss_start for r in records], True, sources))
        prompts.append([_student_prompt(r, student_prompt, source_text) for r in records])
    from leaf.data.records import record_locations
    from leaf.data.special import apply_policy, scan

    paths = [p for p in (data, counterfactuals) if p is not None]
    hits = [h for (samples, *_), path in zip(parts, paths)
            for h in scan(samples, {"student": tokenizer}, lambda path=path: record_locations(path))]
    apply_policy(special_tokens, hits)
    escape = special_tokens == "escape" and bool(hits)
    for (samples, starts, is_cf, srcs), part_prompts in zip(parts, prompts):
        for s, start, src, prompt in zip(samples, starts, srcs, part_prompts):
            kw = dict(counterfactual=is_cf, loss_start=start, include_eos=include_eos, max_length=max_length,
                      source=src, escape_special=escape)
            ex = (build_example(tokenizer, s, **kw) if teacher_tokenizer is None
                  else build_pair_example(tokenizer, teacher_tokenizer, s, **kw))
            if ex is None:
                dropped += 1
            else:
                if student_prompt is not None:
                    ex = replace(ex, instruction=s.instruction, prompt=prompt)
                examples.append(ex)
    if dropped:
        log.warning("dropped %d example(s) with no loss token left after truncation to %s tokens", dropped, max_length)
    if not examples:
        raise DataError([f"{data}: no training example (give --data and/or --counterfactuals)"])
    return examples


def split_heldout(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(train positions, held-out positions)`` of ``examples`` for ``--eval-split fraction``.

    Whole groups are held out (:attr:`Example.group`: an original and every counterfactual of it), so no
    held-out sample is trained on in another form. ``round(fraction x groups)`` groups (at least 1, at most
    all but 1) are drawn with ``random.Random(seed)`` from the sorted group names: the same data and seed
    always hold out the same samples.
    """
    import random

    groups = sorted({e.group for e in examples})
    if fraction <= 0:
        return list(range(len(examples))), []
    if len(groups) < 2:
        raise DataError([f"--eval-split {fraction}: needs at least 2 source samples, the data has {len(groups)}"])
    k = min(max(round(fraction * len(groups)), 1), len(groups) - 1)
    held = set(random.Random(seed).sample(groups, k))
    train = [i for i, e in enumerate(examples) if e.group not in held]
    heldout = [i for i, e in enumerate(examples) if e.group in held]
    return train, heldout


class ExampleDataset:
    """A map-style dataset over examples; items are dicts the collator pads.

    ``ids`` (default ``0..n-1``) is what each item reports as its ``index``: its position in the list the
    teacher cache's collator looks examples up in (all examples of the run, when this is a split of them).
    """

    def __init__(self, examples: Sequence[Example], ids: Sequence[int] | None = None):
        self.examples = list(examples)
        self.ids = list(range(len(self.examples))) if ids is None else list(ids)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = self.examples[i]
        item = {"input_ids": ex.input_ids, "labels": ex.labels, "counterfactual": ex.counterfactual,
                "index": self.ids[i]}
        if ex.teacher_input_ids is not None:
            item.update(teacher_input_ids=ex.teacher_input_ids, teacher_labels=ex.teacher_labels, groups=ex.groups,
                        teacher_groups=ex.teacher_groups)
        return item


@dataclass
class DistillCollator:
    """Right-pads a list of items to the longest one of the batch (dynamic padding), or packs them.

    Output tensors: ``input_ids``, ``attention_mask``, ``labels`` ``(B, L)``;
    ``counterfactual`` ``(B,)`` bool; ``index`` ``(B,)`` dataset indices.

    With ``packed`` (``--packing``): the items end to end in one ``(1, T)`` row, no padding
    (:func:`leaf.batching.pack`): ``input_ids``, ``position_ids`` restarting at each item, ``labels`` and
    ``segment`` (the item of each token, ``-1`` for padding) ``(1, T)``, and no ``attention_mask`` (transformers
    confines attention to each item from the position ids); ``counterfactual`` and ``index`` stay per item.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    teacher_pad_token_id: int | None = None  #: cross-tokenizer runs: pads the teacher's own ids
    packed: bool = False

    def _rows(self, ids: list[Any], labels: list[Any], pad_id: int, multiple_of: int | None) -> dict[str, Any]:
        if self.packed:
            return pack(ids, labels, pad_value=pad_id, multiple_of=multiple_of)
        padded, mask = pad(ids, pad_id, multiple_of=multiple_of)
        return {"input_ids": padded, "attention_mask": mask, "labels": pad(labels, IGNORE_INDEX, multiple_of=multiple_of)[0]}

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = self._rows([it["input_ids"] for it in items], [it["labels"] for it in items], self.pad_token_id,
                           self.pad_to_multiple_of)
        if "teacher_input_ids" in items[0]:
            # cross-tokenizer: the teacher's own ids; group numbers made unique over the batch (row-major order)
            t = self._rows([it["teacher_input_ids"] for it in items], [it["teacher_labels"] for it in items],
                           self.teacher_pad_token_id or 0, None)
            s_grp, t_grp, base = [], [], 0
            for it in items:
                s_grp += [base + g for g in it["groups"]]
                t_grp += [base + g for g in it["teacher_groups"]]
                base += max(it["groups"], default=-1) + 1
            batch.update({f"teacher_{k}": v for k, v in t.items()})
            batch.update({"groups": torch.tensor(s_grp, dtype=torch.long),
                          "teacher_groups": torch.tensor(t_grp, dtype=torch.long)})
        batch["counterfactual"] = torch.tensor([bool(it["counterfactual"]) for it in items])
        batch["index"] = torch.tensor([int(it["index"]) for it in items])
        return batch


# ----------------------------------------------------------------------------
# Teacher / student compatibility.
# ----------------------------------------------------------------------------


class TokenizerMismatch(ConfigError):
    """Teacher and student tokenize differently: token-level KL would compare unrelated ids."""


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of the vocabulary (token -> id, sorted), the identity the KL relies on."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    h = hashlib.sha256()
    for token, idx in vocab:
        h.update(f"{idx}\t{token}\n".encode())
    return h.hexdigest()


def check_tokenizers(student_tokenizer: Any, teacher_tokenizer: Any) -> None:
    """Refuse a pair whose vocabularies differ (ids would not name the same tokens)."""
    if tokenizer_fingerprint(student_tokenizer) == tokenizer_fingerprint(teacher_tokenizer):
        return
    s, t = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    differ = sorted(k for k in set(s) | set(t) if s.get(k) != t.get(k))
    raise TokenizerMismatch(
        f"teacher and student tokenizers differ ({len(s)} vs {len(t)} tokens; e.g. {differ[:5]}): "
        "token-level KL needs one shared vocabulary. Use a teacher from the student's model family "
        "or --cross-tokenizer auto (responses aligned on characters; docs/distill.md)."
    )


def model_vocab_size(model: Any) -> int:
    """Rows of the model's output layer, from its config (parameters may be sharded under ZeRO-3/FSDP)."""
    config = model.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(config.vocab_size)


def shared_vocab_size(student: Any, teacher: Any | None, tokenizer: Any, teacher_vocab: int | None = None) -> int:
    """Logit columns both models share: ``min`` of their output sizes (padded rows dropped).

    Refuses when that would cut off ids the tokenizer can produce.
    """
    sizes = [model_vocab_size(student)]
    if teacher is not None:
        sizes.append(model_vocab_size(teacher))
    if teacher_vocab is not None:
        sizes.append(teacher_vocab)
    shared = min(sizes)
    if shared < len(tokenizer):
        raise TokenizerMismatch(
            f"a model has {shared} output logits but the tokenizer has {len(tokenizer)} tokens; "
            "the models do not match the tokenizer"
        )
    return shared


# ----------------------------------------------------------------------------
# Batch composition.
# ----------------------------------------------------------------------------


class InterleavedSampler:
    """Shuffle originals and counterfactuals separately, then interleave them evenly.

    Any run of ``w`` consecutive indices holds ``w * n_cf / n`` counterfactuals
    (rounded, off by at most one), so every optimiser step -- consecutive
    micro-batches, split over processes by accelerate -- sees both kinds in the
    data's proportion and both terms of the hybrid loss are averaged over
    tokens of that step. The order depends only on ``seed`` and the epoch
    (``set_epoch``, called by the Trainer), so a resumed run sees the same order.

    With ``lengths`` and ``window`` (``--group-by-length``), the interleaved
    order is cut into windows of ``window`` indices; inside each window the
    originals and the counterfactuals are each sorted by length (longest first)
    and interleaved evenly again, so neighbouring indices -- one micro-batch --
    have similar lengths (less padding) while every run of consecutive indices
    still holds both kinds in the window's proportion.
    """

    def __init__(self, is_counterfactual: Sequence[bool], seed: int = 0, *, lengths: Sequence[int] | None = None,
                 window: int | None = None):
        self.flags = [bool(x) for x in is_counterfactual]
        self.seed = seed
        self.epoch = 0
        if lengths is not None and len(lengths) != len(self.flags):
            raise ValueError("one length per example")
        self.lengths = None if lengths is None else [int(n) for n in lengths]
        self.window = window

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.flags)

    @staticmethod
    def _interleave(groups: Sequence[Sequence[int]]) -> list[int]:
        """Each group's items at evenly spread fractions ``(j + 0.5) / n`` of the run, groups in order on ties."""
        keyed = [((j + 0.5) / len(g), kind, i) for kind, g in enumerate(groups) for j, i in enumerate(g)]
        keyed.sort(key=lambda t: (t[0], t[1]))
        return [i for _, _, i in keyed]

    def __iter__(self):  # type: ignore[no-untyped-def]
        import torch

        g = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
        groups = []
        for kind in (False, True):
            idx = [i for i, f in enumerate(self.flags) if f == kind]
            perm = torch.randperm(len(idx), generator=g).tolist()
            groups.append([idx[p] for p in perm])
        order = self._interleave(groups)
        if self.lengths is None or not self.window or self.window < 2:
            return iter(order)
        grouped: list[int] = []
        lengths = self.lengths
        for w0 in range(0, len(order), self.window):
            win = order[w0 : w0 + self.window]
            grouped += self._interleave([sorted((i for i in win if self.flags[i] == kind), key=lambda i: -lengths[i])
                                         for kind in (False, True)])
        return iter(grouped)
