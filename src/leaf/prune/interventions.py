"""Interventions beyond deletion: keep the confounder's place, cut its link to the answer.

LeaF deletes confounders, ``do(A = nothing)``. Two more interventions keep a
token in the confounder's place; the teacher, which sees the same intervened
input in the counterfactual loss, supplies the right targets:

* ``mask`` -- each flagged token becomes a neutral placeholder (the
  tokenizer's mask or unk token, or a configured string);
* ``resample`` -- each flagged token becomes another plausible token, drawn
  from a model's next-token distribution at that position given the
  (original) prefix, restricted to tokens of the same kind and renormalised;
  or (source ``uniform``) drawn uniformly over those same candidates, with no
  model (only the tokenizer, to know the candidates).

Kinds (:func:`token_kind`, on a token's text without surrounding white space):
``digits`` (all digits), ``word`` (all letters), ``mixed`` (letters/digits with
other characters), ``punct`` (no letter or digit) and ``space``. Only digits,
word and mixed tokens are replaced; punctuation and white space are kept.
A replacement has the same kind, the same leading white space (a word stays a
separate word) and is never the original token, a special token, or a piece
of a multi-byte character (:meth:`VocabularyKinds.candidates`). All flagged
tokens of one record are drawn from a single forward pass over the original
text (shared by all draws of that record); draw ``k`` of a record is seeded by
``(seed, record id, k)`` (:func:`draw_seed`; draw 0 by ``(seed, record id)``,
so the first of several draws is the one-draw record).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from leaf.data.detections import Detection, TokenScore
from leaf.data.spans import FieldSpan
from leaf.data.views import make_view

INTERVENTIONS = ("delete", "mask", "resample", "none")
#: where resample draws from: a model's next-token distribution, or uniformly over the candidates
SOURCES = ("student", "teacher", "uniform")
REPLACEABLE = ("digits", "word", "mixed")


def token_kind(text: str) -> str:
    s = text.strip()
    if not s:
        return "space"
    if s.isdigit():
        return "digits"
    if s.isalpha():
        return "word"
    if not any(c.isalnum() for c in s):
        return "punct"
    return "mixed"


@dataclass(frozen=True)
class Replacement:
    field: str
    start: int  #: range in the original field that is replaced
    end: int
    text: str  #: the new text for that range


def replace_ranges(text: str, replacements: Sequence[tuple[int, int, str]]) -> tuple[str, list[dict[str, Any]]]:
    """Apply non-overlapping ``(start, end, new)`` edits; report old and new offsets of each."""
    out, changes, pos, shift = [], [], 0, 0
    for start, end, new in sorted(replacements):
        if start < pos:
            raise ValueError(f"overlapping replacements at {start}")
        out.append(text[pos:start])
        new_start = start + shift
        out.append(new)
        changes.append({"start": start, "end": end, "text": text[start:end], "replacement": new,
                        "new_start": new_start, "new_end": new_start + len(new)})
        shift += len(new) - (end - start)
        pos = end
    out.append(text[pos:])
    return "".join(out), changes


def flagged_tokens(det: Detection, spans: Iterable[FieldSpan]) -> list[TokenScore]:
    """Distinct flagged tokens of ``det`` inside the given (field, start, end) spans, in order."""
    chosen, seen = [], set()
    spans = list(spans)
    for t in det.tokens:
        key = (t.field, t.start, t.end)
        if not t.flag or key in seen:
            continue
        if any(f == t.field and t.start < e and t.end > s for f, s, e in spans):
            seen.add(key)
            chosen.append(t)
    return chosen


def core_range(text: str, start: int, end: int) -> tuple[int, int]:
    """The token's range without its surrounding white space (a mask keeps the space before a word)."""
    piece = text[start:end]
    lead = len(piece) - len(piece.lstrip())
    trail = len(piece) - len(piece.rstrip())
    return start + lead, end - trail


def mask_replacements(texts: dict[str, str], tokens: Sequence[TokenScore], placeholder: str) -> list[Replacement]:
    out = []
    for t in tokens:
        if token_kind(t.text) not in REPLACEABLE:
            continue
        s, e = core_range(texts[t.field], t.start, t.end)
        out.append(Replacement(t.field, s, e, placeholder))
    return out


def default_placeholder(tokenizer: Any | None) -> str:
    """The tokenizer's mask token, else its unk token, else ``"[MASK]"``."""
    if tokenizer is not None:
        for name in ("mask_token", "unk_token"):
            tok = getattr(tokenizer, name, None)
            if tok:
                return str(tok)
    return "[MASK]"


class VocabularyKinds:
    """Kind, leading white space and usability of every token of a tokenizer (computed once)."""

    def __init__(self, tokenizer: Any) -> None:
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        n = len(tokenizer)
        self.texts = [tokenizer.decode([i]) for i in range(n)]
        self.kinds = [token_kind(t) for t in self.texts]
        self.leading = torch.tensor([t[:1].isspace() for t in self.texts])
        usable = torch.tensor([i not in special and "\ufffd" not in t for i, t in enumerate(self.texts)])
        self.usable = usable
        self._by_kind = {k: torch.tensor([kk == k for kk in self.kinds]) for k in REPLACEABLE}

    def candidates(self, token_id: int) -> torch.Tensor:
        """Bool mask over the vocabulary of valid replacements for ``token_id``."""
        kind = self.kinds[token_id]
        mask = self._by_kind[kind] & self.usable & (self.leading == bool(self.leading[token_id]))
        mask[token_id] = False
        return mask


class Resampler:
    """Draw same-kind replacements from ``model``'s next-token distribution (uniformly when ``model`` is None)."""

    def __init__(self, model: Any | None, tokenizer: Any, seed: int = 0) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.seed = seed
        self.vocab = VocabularyKinds(tokenizer)
        self._last: tuple[tuple[Any, ...], Any] | None = None  # the last record's view (and logits): its draws

    def _prepare(self, sample: Any, det: Detection) -> tuple[Any, dict[Any, int], torch.Tensor | None]:
        """The tokenized view of the original text, its token index and (with a model) its logits."""
        key = (sample.id, sample.instruction, sample.response, det.truncated, det.response_level, det.loss_start,
               det.loss_end)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        level_kwargs = {}
        if det.response_level:
            level_kwargs = {"loss_start": det.loss_start, "loss_end": det.loss_end}
        cut = det.truncated
        view, _ = make_view(self.tokenizer, sample.instruction[cut:], sample.response, cut=cut, **level_kwargs)
        index = {(view.field(i), *view.offsets[i]): view.scored[i] for i in range(len(view.scored))}
        logits = None
        if self.model is not None:
            device = self.model.get_input_embeddings().weight.device
            logits = self.model(torch.tensor([view.input_ids], device=device)).logits[0].float().cpu()
        self._last = (key, (view, index, logits))
        return view, index, logits

    @torch.no_grad()
    def replacements(self, record_id: str, sample: Any, det: Detection,
                     tokens: Sequence[TokenScore], draw: int = 0) -> list[Replacement]:
        """Replacements of ``tokens`` for draw ``draw`` of record ``record_id``."""
        view, index, logits = self._prepare(sample, det)
        gen = torch.Generator().manual_seed(draw_seed(self.seed, record_id, draw))
        texts = {"instruction": sample.instruction, "response": sample.response}
        out = []
        for t in tokens:
            field = t.field
            pos = index.get((field, t.start, t.end))
            if pos is None:
                raise ValueError(
                    f"record {record_id}: token {t.text!r} at {t.start}-{t.end} is not a token of the "
                    "resampling tokenizer; resample with the tokenizer the detection used"
                )
            original = view.input_ids[pos]
            if token_kind(self.vocab.texts[original]) not in REPLACEABLE or pos == 0:
                continue
            candidates = self.vocab.candidates(original)
            if logits is None:  # uniform over the candidates
                choices = candidates.nonzero().flatten()
                if len(choices) == 0:
                    continue
                new_id = int(choices[int(torch.randint(len(choices), (1,), generator=gen))])
            else:
                probs = torch.softmax(logits[pos - 1], dim=-1) * candidates
                if probs.sum() <= 0:
                    continue
                new_id = int(torch.multinomial(probs / probs.sum(), 1, generator=gen))
            # The token covers the field range exactly when it does not reach into template text.
            s, e = t.start, t.end
            new_text = self.vocab.texts[new_id]
            if texts[field][s:e] != self.vocab.texts[original]:
                s, e = core_range(texts[field], s, e)
                new_text = new_text.strip()
            out.append(Replacement(field, s, e, new_text))
        return out


def draw_seed(seed: int, record_id: str, draw: int = 0) -> int:
    """The generator seed of draw ``draw`` of a record (draw 0: the seed of a single draw, as before draws)."""
    import hashlib

    key = f"{seed}:{record_id}" if draw == 0 else f"{seed}:{record_id}:draw{draw}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
