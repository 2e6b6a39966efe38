"""A sample as one model sees it: token ids, which tokens are scored, which carry the loss.

Everything downstream speaks in characters of the sample's own fields, so a
:class:`View` keeps, for each scored token, the field it belongs to
(``"instruction"``, or ``"response"`` for response-level detection) and its
``[start, end)`` range in that field (clipped to it: template text never leaks
into a token's span). Detection scores views; resampling reads the model's
distribution at their tokens.

A tokenizer that normalises its input (Qwen's NFC) can leave characters that no
token's offsets cover -- a combining accent folded into the previous letter.
Such characters are never scored by that model; a view lists them
(``uncovered``, as field ranges) so they can be reported rather than silently
lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from leaf.data.render import Rendered, encode, render
from leaf.data.spans import FieldSpan, Span


@dataclass(frozen=True)
class View:
    """One sample as one model sees it."""

    input_ids: list[int]
    scored: list[int]  #: token indices whose saliency is read
    offsets: list[Span]  #: per scored token, its range in its (original) field
    targets: list[int]  #: token indices whose NLL forms the loss
    fields: tuple[str, ...] = ()  #: per scored token, "instruction" or "response"
    #: ``(field, start, end)`` ranges of scored text that no token of this model covers
    uncovered: tuple[FieldSpan, ...] = ()

    def field(self, i: int) -> str:
        return self.fields[i] if self.fields else "instruction"

    @property
    def n_uncovered(self) -> int:
        """Characters of the scored text that no token covers."""
        return sum(e - s for _f, s, e in self.uncovered)


def gaps(lo: int, hi: int, ranges: list[Span]) -> list[Span]:
    """The parts of ``[lo, hi)`` that none of ``ranges`` covers (in order)."""
    out, pos = [], lo
    for s, e in sorted(ranges):
        if s > pos:
            out.append((pos, min(s, hi)))
        pos = max(pos, e)
        if pos >= hi:
            break
    if pos < hi:
        out.append((pos, hi))
    return [(s, e) for s, e in out if e > s]


def make_view(tokenizer: Any, instruction: str, response: str, *, cut: int = 0,
              loss_start: int = 0, loss_end: int | None = None,
              render_mode: str = "auto", escape_special: bool = False) -> tuple[View, Rendered]:
    """Render and tokenize one sample for one model.

    ``instruction`` is the (possibly cut) text the model sees; ``cut`` is added to
    offsets so they index the original instruction. Targets are the response
    tokens of ``[loss_start, loss_end)`` (character offsets into ``response``);
    ``escape_special``: control-token strings inside the instruction and response are tokenised as text;
    scored are the instruction tokens plus, when ``loss_start > 0``, the response
    tokens before the targets. ``render_mode``: see :func:`leaf.data.render.render`.
    """
    end = len(response) if loss_end is None else loss_end
    rendered = render(tokenizer, instruction, response[:end], render_mode)
    literal = (rendered.instruction_span, rendered.response_span) if escape_special else ()
    enc = encode(tokenizer, rendered.text, literal)
    targets = enc.tokens_in([rendered.response_to_text(loss_start, end)])
    scored, offsets, fields = [], [], []
    parts = [("instruction", rendered.instruction_span, cut + rendered.instruction_offset)]
    if loss_start > 0:
        parts.append(("response", rendered.response_to_text(0, loss_start), rendered.response_offset))
    target_set = set(targets)
    uncovered: list[FieldSpan] = []
    for name, (lo, hi), shift in parts:
        base = shift - (rendered.instruction_span[0] if name == "instruction" else rendered.response_span[0])
        part = enc.tokens_in([(lo, hi)])
        uncovered += [(name, s + base, e + base) for s, e in gaps(lo, hi, [enc.offsets[t] for t in part])]
        for t in part:
            if t in target_set:  # a token straddling the loss boundary is a target, not a context token
                continue
            s, e = enc.offsets[t]
            bound = rendered.instruction_span if name == "instruction" else rendered.response_span
            s, e = max(s, bound[0]), min(e, bound[1])
            scored.append(t)
            offsets.append((s + base, e + base))
            fields.append(name)
    return View(enc.input_ids, scored, offsets, targets, tuple(fields), tuple(uncovered)), rendered
