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

Skipped samples are reported with a reason, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from leaf.data.records import Sample
from leaf.data.views import View, make_view

TRUNCATION_POLICIES = ("left", "skip")


@dataclass(frozen=True)
class Prepared:
    sample: Sample
    cut: int  #: characters removed from the left of the instruction
    views: dict[str, View]
    key: str = ""  #: unique output key (the sample id, or id@segment at response level)
    loss_start: int = 0  #: response characters [loss_start, loss_end) form the loss
    loss_end: int | None = None


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
) -> Prepared | Skipped:
    """Views of ``sample`` for every named tokenizer, fitted to ``max_length``.

    Only the instruction is ever cut; response context is kept whole.
    """
    if truncation not in TRUNCATION_POLICIES:
        raise ValueError(f"unknown truncation policy {truncation!r}; use one of {TRUNCATION_POLICIES}")
    cut = 0
    for _ in range(16):  # each round cuts at least one token; a few rounds suffice in practice
        instruction = sample.instruction[cut:]
        views = {
            name: make_view(tok, instruction, sample.response, cut=cut, loss_start=loss_start, loss_end=loss_end)[0]
            for name, tok in tokenizers.items()
        }
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
