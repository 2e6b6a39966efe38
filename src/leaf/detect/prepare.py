"""Turn a sample into what each model scores: token ids, scored tokens, target tokens.

Everything downstream speaks in characters of the sample's own fields, so a
:class:`View` keeps, for each scored token, its ``[start, end)`` range in the
instruction (clipped to it: template text never leaks into a token's span).

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
from leaf.data.render import Rendered, encode, render

Span = tuple[int, int]
TRUNCATION_POLICIES = ("left", "skip")


@dataclass(frozen=True)
class View:
    """One sample as one model sees it."""

    input_ids: list[int]
    scored: list[int]  #: token indices whose saliency is read
    offsets: list[Span]  #: per scored token, its range in the (original) instruction
    targets: list[int]  #: token indices whose NLL forms the loss


@dataclass(frozen=True)
class Prepared:
    sample: Sample
    cut: int  #: characters removed from the left of the instruction
    views: dict[str, View]


@dataclass(frozen=True)
class Skipped:
    sample: Sample
    reason: str


def make_view(tokenizer: Any, instruction: str, response: str, *, cut: int = 0,
              loss_start: int = 0) -> tuple[View, Rendered]:
    """Render and tokenize; scored = instruction tokens, targets = response tokens from ``loss_start``.

    ``instruction`` is the (possibly cut) text the model sees; ``cut`` is added to
    offsets so they index the original instruction. ``loss_start`` is a character
    offset into ``response``.
    """
    rendered = render(tokenizer, instruction, response)
    enc = encode(tokenizer, rendered.text)
    i0, i1 = rendered.instruction_span
    scored = enc.tokens_in([rendered.instruction_span])
    offsets = []
    for t in scored:
        s, e = enc.offsets[t]
        s, e = max(s, i0), min(e, i1)
        base = cut + rendered.instruction_offset - i0
        offsets.append((s + base, e + base))
    targets = enc.tokens_in([rendered.response_to_text(loss_start, len(response))])
    return View(enc.input_ids, scored, offsets, targets), rendered


def prepare(
    sample: Sample,
    tokenizers: Mapping[str, Any],
    *,
    max_length: int | None,
    truncation: str = "left",
) -> Prepared | Skipped:
    """Views of ``sample`` for every named tokenizer, fitted to ``max_length``."""
    if truncation not in TRUNCATION_POLICIES:
        raise ValueError(f"unknown truncation policy {truncation!r}; use one of {TRUNCATION_POLICIES}")
    cut = 0
    for _ in range(16):  # each round cuts at least one token; a few rounds suffice in practice
        instruction = sample.instruction[cut:]
        views = {name: make_view(tok, instruction, sample.response, cut=cut)[0] for name, tok in tokenizers.items()}
        for name, v in views.items():
            if not v.scored:
                return Skipped(sample, f"{name}: no instruction token left")
            if not v.targets:
                return Skipped(sample, f"{name}: the response has no token")
        over = {name: len(v.input_ids) - max_length for name, v in views.items()} if max_length else {}
        if all(n <= 0 for n in over.values()):
            return Prepared(sample, cut, views)
        worst = max(over, key=lambda k: over[k])
        if truncation == "skip":
            return Skipped(sample, f"{worst}: {len(views[worst].input_ids)} tokens > max_length {max_length}")
        new_cut = cut
        for name, n in over.items():
            v = views[name]
            if n <= 0:
                continue
            if n >= len(v.scored):
                return Skipped(
                    sample,
                    f"{name}: the response alone needs {len(v.input_ids) - len(v.scored)} tokens "
                    f"(max_length {max_length}); nothing to cut from the instruction",
                )
            new_cut = max(new_cut, v.offsets[n][0])
        if new_cut <= cut:  # pragma: no cover - offsets always advance
            return Skipped(sample, "could not shorten the instruction")
        cut = new_cut
    return Skipped(sample, f"did not fit max_length {max_length} after repeated cuts")
