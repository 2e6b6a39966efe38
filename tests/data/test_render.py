"""Exact spans on three template styles: LLaMA-3 (trims), ChatML, and no template."""

from __future__ import annotations

import pytest

from leaf.data.render import TemplateError, encode, render, render_prompt
from leaf.detect.prepare import make_view

INSTRUCTIONS = [
    "Tom has 3 apples and buys 5 more. How many apples?",
    "  leading and trailing spaces  ",
    "Über café — naïve ünïcödé, emoji 🍎 and CJK 数学.",
    "def f(x):\n    # misleading: returns 10\n    return x * 3\n\nWhat is f(4)?",
    "<|im_start|> looks like a special token but is text",
]
RESPONSE = "Step 1: think.\nStep 2: The answer is 8."


@pytest.mark.parametrize("style", ["llama3", "chatml", "none"])
@pytest.mark.parametrize("instruction", INSTRUCTIONS)
def test_scored_tokens_cover_exactly_the_instruction(tokenizers, style, instruction):
    tok = tokenizers[style]
    view, rendered = make_view(tok, instruction, RESPONSE)
    rendered_instr = rendered.text[slice(*rendered.instruction_span)]
    # the rendered instruction is the field itself (or its trimmed form for LLaMA-3)
    expected = instruction.strip() if style == "llama3" else instruction
    assert rendered_instr == expected
    assert rendered.text[slice(*rendered.response_span)] == RESPONSE
    # every scored token lies inside the instruction and together they cover it, in order
    start = rendered.instruction_offset
    assert view.offsets[0][0] == start and view.offsets[-1][1] == start + len(expected)
    # byte-level BPE splits a multi-byte character over several tokens, which then
    # share that character's range; otherwise tokens tile the text without gaps
    for (s0, e0), (s1, e1) in zip(view.offsets, view.offsets[1:]):
        assert 0 <= s0 < e0 and ((s1, e1) == (s0, e0) or s1 == e0)
    distinct = dict.fromkeys(view.offsets)
    assert "".join(instruction[s:e] for s, e in distinct) == expected
    # targets are exactly the response tokens
    enc = encode(tok, rendered.text)
    covered = "".join(rendered.text[slice(*enc.offsets[t])] for t in view.targets)
    assert RESPONSE in covered and len(covered) - len(RESPONSE) <= 1


def test_llama3_style_text_and_prompt(tokenizers):
    tok = tokenizers["llama3"]
    r = render(tok, "Hi?", "Hello.")
    assert r.text == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
    )
    assert r.prompt == render_prompt(tok, "Hi?") and r.text.startswith(r.prompt)


def test_plain_template_without_chat_template(tokenizers):
    tok = tokenizers["none"]
    r = render(tok, "Hi?", "Hello.")
    assert r.text == "<s>### Instruction:\nHi?\n\n### Response:\nHello.</s>"
    assert r.prompt == render_prompt(tok, "Hi?") == "<s>### Instruction:\nHi?\n\n### Response:\n"


def test_loss_start_limits_targets(tokenizers):
    tok = tokenizers["chatml"]
    view_all, rendered = make_view(tok, "Q?", RESPONSE)
    cut = RESPONSE.index("Step 2")
    view_late, _ = make_view(tok, "Q?", RESPONSE, loss_start=cut)
    enc = encode(tok, rendered.text)
    first = enc.offsets[view_late.targets[0]]
    assert rendered.text[first[0]:first[1]].strip().startswith("Step")
    assert set(view_late.targets) < set(view_all.targets)
    assert first[0] >= rendered.response_span[0] + cut - 1


def test_template_that_rewrites_content_is_refused(tokenizers):
    tok = tokenizers["chatml"]
    original = tok.chat_template
    try:
        tok.chat_template = "{% for m in messages %}{{ m['content'] | upper }}{% endfor %}"
        with pytest.raises(TemplateError, match="rewrites"):
            render(tok, "hello there", "ok fine")
    finally:
        tok.chat_template = original
