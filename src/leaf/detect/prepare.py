"""Turn a sample into what each model scores: token ids, scored tokens, target tokens.

Everything downstream speaks in characters of the sample's own fields, so a
:class:`View` keeps, for each scored token, the field it belongs to
(``"instruction"``, or ``"response"`` for response-level detection) and its
``[start, end)`` range in that field (clipped to it: template text never leaks
into a token's span).

Instruction level: the instruction is scored, the loss covers the response.
Response level (:func:`prepare` with ``loss_start``/``loss_end``): the loss
covers one later response segment ``[loss_start, loss_end)``, and the
instruction plus the response before ``loss_start`` are scored; the response
is rendered only up to ``loss_end`` (later text cannot affect a causal LM's
loss on earlier tokens).

Long samples follow an explicit policy (``truncation``):

* ``"left"`` -- cut the instruction from the left, at a token boundary, until
  both models' renderings fit ``max_length`` tokens; the number of characters
  cut is recorded (``cut``) and offsets still refer to the *original*
  instruction. If the response alone does not fit, the sample is skipped.
* ``"skip"`` -- skip every sample that does not fit.

Before any tokenisation the instruction is cut on characters to at most
``max_length * CHARS_PER_TOKEN`` (16): a 10 MB instruction is never tokenised
whole. Tokenizers average 3-5 characters per token on English and code and
1-2 on CJK, so the kept tail still holds several times ``max_length`` tokens
and the token-boundary cut above decides the final start in practice (only
text whose tokens average more than 16 characters -- long runs of one
repeated character -- can end up shorter than ``max_length``). The cut counts
in ``cut``; under ``"skip"`` such an instruction is skipped.

A sample the chat template cannot render (it rewrites the sample and, under
``render_mode="auto"``, the prompt-then-response rendering fails too; see
:func:`leaf.data.render.render`) is skipped with the template's reason.
Skipped samples are reported with a reason, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from leaf.data.records import Sample
from leaf.data.render import TemplateError
from leaf.data.views import View, make_view

TRUNCATION_POLICIES = ("left", "skip")

#: Characters kept per token of ``max_length`` by the cut made before tokenising.
CHARS_PER_TOKEN = 16


@dataclass(frozen=True)
class Prepared:
    sample: Sample
    cut: int  #: characters removed from the left of the instruction
    views: dict[str, View]
    key: str = ""  #: unique output key (the sample id, or id@segment at response level)
    loss_start: int = 0  #: response characters [loss_start, loss_end) form the loss
    loss_end: int | None = None

    @property
    def uncovered(self) -> dict[str, int]:
        """Per model, characters of the scored text that none of its tokens covers (0 for most tokenizers)."""
        return {name: v.n_uncovered for name, v in self.views.items()}


@dataclass(frozen=True)
class Skipped:
    sample: Sample
    reason: str


def prepare(
    sample: Sample,
    tokenizers: Mapping[str, Any],
    *,
    max_length: int | None,
    truncation: str = "left",
    loss_start: int = 0,
    loss_end: int | None = None,
    key: str | None = None,
    render_mode: str = "auto",
    escape_special: bool = False,
) -> Prepared | Skipped:
    """Views of ``sample`` for every named tokenizer, fitted to ``max_length``.

    Only the instruction is ever cut; response context is kept whole.
    """
    if truncation not in TRUNCATION_POLICIES:
        raise ValueError(f"unknown truncation policy {truncation!r}; use one of {TRUNCATION_POLICIES}")
    cut = 0
    if max_length and len(sample.instruction) > max_length * CHARS_PER_TOKEN:
        if truncation == "skip":
            return Skipped(sample, f"instruction of {len(sample.instruction)} characters > max_length {max_length} "
                                   f"x {CHARS_PER_TOKEN} characters per token")
        cut = len(sample.instruction) - max_length * CHARS_PER_TOKEN
    for _ in range(16):  # each round cuts at least one token; a few rounds suffice in practice
        instruction = sample.instruction[cut:]
        views = {}
        for name, tok in tokenizers.items():
            try:
                views[name] = make_view(tok, instruction, sample.response, cut=cut, loss_start=loss_start,
                                        loss_end=loss_end, render_mode=render_mode,
                                        escape_special=escape_special)[0]
            except TemplateError as exc:
                return Skipped(sample, f"{name}: {exc}")
        for name, v in views.items():
            if not v.scored:
                return Skipped(sample, f"{name}: no instruction token left")
            if not v.targets:
                return Skipped(sample, f"{name}: the response has no token")
        over = {name: len(v.input_ids) - max_length for name, v in views.items()} if max_length else {}
        if all(n <= 0 for n in over.values()):
            unit_key = key if key is not None else str(sample.id)
            return Prepared(sample, cut, views, unit_key, loss_start, loss_end)
        worst = max(over, key=lambda k: over[k])
        if truncation == "skip":
            return Skipped(sample, f"{worst}: {len(views[worst].input_ids)} tokens > max_length {max_length}")
        new_cut = cut
        for name, n in over.items():
            v = views[name]
            n_instruction = sum(1 for i in range(len(v.scored)) if v.field(i) == "instruction")
            if n <= 0:
                continue
            if n >= n_instruction:
                return Skipped(
                    sample,
                    f"{name}: the response alone needs {len(v.input_ids) - n_instruction} tokens "
                    f"(max_length {max_length}); nothing to cut from the instruction",
                )
            new_cut = max(new_cut, v.offsets[n][0])
        if new_cut <= cut:  # pragma: no cover - offsets always advance
            return Skipped(sample, "could not shorten the instruction")
        cut = new_cut
    return Skipped(sample, f"did not fit max_length {max_length} after repeated cuts")
