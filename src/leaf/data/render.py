"""Render a sample as the model sees it, and know exactly where each part lies.

:func:`render` turns (instruction, response) into the text a causal LM is
trained on -- through the tokenizer's chat template (user = instruction,
assistant = response) when it has one, else :data:`PLAIN_TEMPLATE` -- and
returns the character span of the instruction and of the response inside that
text. The spans are found structurally: the template is rendered once with
unique sentinels in place of the contents, the sentinels split it into the
fixed parts, and the real rendering must equal fixed parts + contents. A
template that trims the contents (LLaMA-3's does) is handled by locating the
trimmed text inside the original field; one that rewrites them otherwise is
refused with a clear error instead of producing wrong offsets.

Reasoning templates (Qwen3, DeepSeek-R1) rewrite the assistant turn: they move
or drop a ``<think>...</think>`` block of the response, so the response cannot
be rendered verbatim. For them :func:`render` has a second, documented
rendering, ``mode="prompt-then-response"``: the template's generation prompt
(``add_generation_prompt=True``, exactly what :func:`render_prompt` gives and
what :mod:`leaf.generation` feeds the model), then the response verbatim, then
the text the template closes an assistant turn with (:func:`turn_end`; the
end-of-turn token, e.g. ``<|im_end|>\n``). ``mode="auto"`` (the default) uses the
template's own rendering and falls back to prompt-then-response only when the
template does not reproduce the sample verbatim; ``mode="template"`` never
falls back.

:func:`encode` tokenizes the rendered text with a fast tokenizer's offset
mapping and returns the token indices that overlap given character spans. No
token is ever decoded to find a position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from leaf.data.spans import Span

#: Used when the tokenizer has no chat template. ``{bos}``/``{eos}`` are the
#: tokenizer's BOS/EOS strings (empty when it has none).
PLAIN_TEMPLATE = "{bos}### Instruction:\n{instruction}\n\n### Response:\n{response}{eos}"

_SENTINEL_I = "\u2063LEAFINSTRUCTION\u2063"
_SENTINEL_R = "\u2063LEAFRESPONSE\u2063"


#: How a sample is rendered (see the module docstring).
RENDER_MODES = ("auto", "template", "prompt-then-response")


class TemplateError(ValueError):
    """The chat template does not reproduce the instruction/response verbatim."""


@dataclass(frozen=True)
class Rendered:
    """A sample rendered to text.

    ``instruction_span`` / ``response_span`` are ``[start, end)`` character
    ranges of ``text``. ``instruction_offset`` / ``response_offset`` are the
    positions in the original fields where the rendered content starts (non
    zero when a template trims leading whitespace), so text position ``p``
    inside the instruction span is field position
    ``p - instruction_span[0] + instruction_offset``.
    """

    text: str
    prompt: str
    instruction_span: Span
    response_span: Span
    instruction_offset: int = 0
    response_offset: int = 0
    mode: str = "template"  #: "template" or "prompt-then-response": how ``text`` was made

    def instruction_to_text(self, start: int, end: int) -> Span:
        """Map a ``[start, end)`` range of the instruction field into ``text`` (clipped)."""
        return _to_text(start, end, self.instruction_span, self.instruction_offset)

    def response_to_text(self, start: int, end: int) -> Span:
        """Map a ``[start, end)`` range of the response field into ``text`` (clipped)."""
        return _to_text(start, end, self.response_span, self.response_offset)


def _to_text(start: int, end: int, span: Span, offset: int) -> Span:
    lo = min(max(span[0] + start - offset, span[0]), span[1])
    hi = min(max(span[0] + end - offset, span[0]), span[1])
    return lo, hi


def _messages(instruction: str, response: str | None) -> list[dict[str, str]]:
    msgs = [{"role": "user", "content": instruction}]
    if response is not None:
        msgs.append({"role": "assistant", "content": response})
    return msgs


def _apply(tokenizer: Any, instruction: str, response: str | None) -> str:
    from jinja2.exceptions import TemplateError as JinjaError

    try:
        return tokenizer.apply_chat_template(
            _messages(instruction, response),
            tokenize=False,
            add_generation_prompt=response is None,
        )
    except JinjaError as exc:  # raise_exception() inside a template, or a template bug
        raise TemplateError(f"the chat template fails: {exc}") from None


def _locate(real: str, pattern: str, sentinel: str, content: str, what: str) -> tuple[Span, int]:
    """Find ``content`` in ``real`` given ``pattern`` = the same rendering with a sentinel."""
    if pattern.count(sentinel) != 1:
        raise TemplateError(f"the chat template renders the {what} {pattern.count(sentinel)} times; expected once")
    pre, post = pattern.split(sentinel)
    if not (real.startswith(pre) and real.endswith(post) and len(real) >= len(pre) + len(post)):
        raise TemplateError(f"the chat template changes its fixed text around the {what}; cannot locate it")
    middle = real[len(pre) : len(real) - len(post)]
    offset = content.find(middle) if middle else -1
    if offset < 0 or content[offset : offset + len(middle)].strip() != content.strip():
        raise TemplateError(
            f"the chat template rewrites the {what} (not verbatim or trimmed); offsets would be wrong"
        )
    return (len(pre), len(pre) + len(middle)), offset


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render(tokenizer: Any, instruction: str, response: str, mode: str = "auto") -> Rendered:
    """Render a training pair and locate its instruction and response.

    ``mode``: ``"template"`` (the chat template's own rendering, verbatim or
    refused), ``"prompt-then-response"`` (generation prompt + response verbatim +
    :func:`turn_end`), or ``"auto"``: the first, else the second when the template
    does not reproduce the sample verbatim. Without a chat template both modes
    give the same :data:`PLAIN_TEMPLATE` text.
    """
    if mode not in RENDER_MODES:
        raise ValueError(f"unknown render mode {mode!r}; use one of {RENDER_MODES}")
    if not has_chat_template(tokenizer):
        bos = tokenizer.bos_token or ""
        eos = tokenizer.eos_token or ""
        head = PLAIN_TEMPLATE.split("{instruction}")[0].format(bos=bos)
        mid = PLAIN_TEMPLATE.split("{instruction}")[1].split("{response}")[0]
        i0 = len(head)
        r0 = i0 + len(instruction) + len(mid)
        text = head + instruction + mid + response + eos
        return Rendered(text, text[:r0], (i0, i0 + len(instruction)), (r0, r0 + len(response)))
    if mode == "prompt-then-response":
        return _render_prompt_then_response(tokenizer, instruction, response)
    try:
        return _render_template(tokenizer, instruction, response)
    except TemplateError as exc:
        if mode == "template":
            raise
        try:
            return _render_prompt_then_response(tokenizer, instruction, response)
        except TemplateError as second:
            raise TemplateError(f"{exc}; prompt-then-response: {second}") from None


def _render_template(tokenizer: Any, instruction: str, response: str) -> Rendered:
    """The chat template's own rendering of (user, assistant), verbatim or trimmed."""
    full = _apply(tokenizer, instruction, response)
    # The instruction: vary only the user turn, keep the real response.
    i_span, i_off = _locate(full, _apply(tokenizer, _SENTINEL_I, response), _SENTINEL_I, instruction, "instruction")
    r_span, r_off = _locate(full, _apply(tokenizer, instruction, _SENTINEL_R), _SENTINEL_R, response, "response")
    if not i_span[1] <= r_span[0]:
        raise TemplateError("the chat template places the response before the instruction")
    prompt = _apply(tokenizer, instruction, None)
    return Rendered(full, prompt, i_span, r_span, i_off, r_off)


def _render_prompt_then_response(tokenizer: Any, instruction: str, response: str) -> Rendered:
    """Generation prompt, then the response verbatim, then the template's end of turn."""
    prompt = _apply(tokenizer, instruction, None)
    i_span, i_off = _locate(prompt, _apply(tokenizer, _SENTINEL_I, None), _SENTINEL_I, instruction, "instruction")
    r0 = len(prompt)
    text = prompt + response + turn_end(tokenizer)
    return Rendered(text, prompt, i_span, (r0, r0 + len(response)), i_off, 0, "prompt-then-response")


def turn_end(tokenizer: Any) -> str:
    """The text the chat template puts after an assistant reply (its end-of-turn token and what follows).

    Found by rendering a placeholder reply (which every template renders
    verbatim); the tokenizer's EOS token when even that fails.
    """
    try:
        pattern = _apply(tokenizer, "hi", _SENTINEL_R)
    except TemplateError:
        pattern = ""
    if pattern.count(_SENTINEL_R) == 1:
        return pattern.split(_SENTINEL_R)[1]
    return tokenizer.eos_token or ""


def prompt_instruction_span(tokenizer: Any, instruction: str, prompt: str) -> Span:
    """Where ``instruction`` lies in its generation prompt (``prompt = render_prompt(tokenizer, instruction)``)."""
    pre, _, post = render_prompt(tokenizer, _SENTINEL_I).partition(_SENTINEL_I)
    if prompt.startswith(pre) and prompt.endswith(post) and len(prompt) >= len(pre) + len(post):
        return len(pre), len(prompt) - len(post)
    return 0, len(prompt)  # a template that rewrites its fixed text: the whole prompt is literal


def render_prompt(tokenizer: Any, instruction: str) -> str:
    """The generation prompt for ``instruction`` (chat template or plain template)."""
    if not has_chat_template(tokenizer):
        bos = tokenizer.bos_token or ""
        return PLAIN_TEMPLATE.split("{response}")[0].format(bos=bos, instruction=instruction)
    return _apply(tokenizer, instruction, None)


@dataclass(frozen=True)
class Encoding:
    """Token ids of a rendered text plus the character offsets of each token."""

    input_ids: list[int]
    offsets: list[Span]

    def __len__(self) -> int:
        return len(self.input_ids)

    def tokens_in(self, spans: Sequence[Span]) -> list[int]:
        """Indices of non-empty tokens overlapping any of ``spans`` (sorted)."""
        out = []
        for i, (s, e) in enumerate(self.offsets):
            if e > s and any(s < hi and e > lo for lo, hi in spans if hi > lo):
                out.append(i)
        return out


def encode(tokenizer: Any, text: str, literal: Sequence[Span] = ()) -> Encoding:
    """Tokenize rendered text (special tokens come from the text itself).

    ``literal``: character ranges (the sample's contents) whose special-token strings are tokenised as
    ordinary text (``--special-tokens-in-text escape``, :func:`leaf.data.special.encode_parts`).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TemplateError(
            f"{type(tokenizer).__name__} is not a fast tokenizer: leaf needs offset mappings "
            "(load it with use_fast=True, or convert it with `tokenizers`)"
        )
    if literal:
        from leaf.data.special import encode_parts

        ids, offsets = encode_parts(tokenizer, text, literal)
        return Encoding(ids, offsets)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return Encoding(list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]])
