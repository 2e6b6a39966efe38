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


# A DeepSeek-R1-like template: it drops the reasoning of the assistant turn and
# its generation prompt opens the think block.
R1_LIKE = (
    "{% for m in messages %}{% if m.role == 'user' %}<|User|>{{ m.content }}"
    "{% else %}{% set c = m.content %}{% if '</think>' in c %}{% set c = c.split('</think>')[-1] %}{% endif %}"
    "<|Assistant|>{{ c }}<|end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|><think>\n{% endif %}"
)


@pytest.fixture()
def r1_tok(tokenizers):
    import copy

    tok = copy.deepcopy(tokenizers["chatml"])
    tok.chat_template = R1_LIKE
    return tok


def test_reasoning_template_falls_back_to_prompt_then_response(r1_tok):
    response = "2 and 2 make 4.\n</think>\n\nThe answer is 4."
    with pytest.raises(TemplateError, match="rewrites the response"):
        render(r1_tok, "What is 2 + 2?", response, "template")
    r = render(r1_tok, "What is 2 + 2?", response)  # auto
    assert r.mode == "prompt-then-response"
    assert r.text == "<|User|>What is 2 + 2?<|Assistant|><think>\n" + response + "<|end|>\n"
    assert r.prompt == render_prompt(r1_tok, "What is 2 + 2?") and r.text.startswith(r.prompt)
    assert r.text[slice(*r.instruction_span)] == "What is 2 + 2?"
    assert r.text[slice(*r.response_span)] == response
    # a response without a think block renders verbatim through the template itself
    plain = render(r1_tok, "Q?", "A.")
    assert plain.mode == "template" and plain.text == "<|User|>Q?<|Assistant|>A.<|end|>\n"
    # forcing the documented rendering gives it for every sample
    forced = render(r1_tok, "Q?", "A.", "prompt-then-response")
    assert forced.mode == "prompt-then-response" and forced.text == "<|User|>Q?<|Assistant|><think>\nA.<|end|>\n"
    with pytest.raises(ValueError, match="render mode"):
        render(r1_tok, "Q?", "A.", "verbatim")


def test_prompt_then_response_views_score_the_instruction_and_target_the_response(r1_tok):
    response = "think</think>The answer is 4."
    view, rendered = make_view(r1_tok, "What is 2 + 2?", response)
    assert rendered.mode == "prompt-then-response"
    assert "".join("What is 2 + 2?"[s:e] for s, e in dict.fromkeys(view.offsets)) == "What is 2 + 2?"
    enc = encode(r1_tok, rendered.text)
    covered = "".join(rendered.text[slice(*enc.offsets[t])] for t in view.targets)
    assert response in covered and not view.uncovered
    with pytest.raises(TemplateError):
        make_view(r1_tok, "What is 2 + 2?", response, render_mode="template")


def test_template_that_raises_is_a_template_error(tokenizers):
    import copy

    tok = copy.deepcopy(tokenizers["chatml"])
    tok.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(TemplateError, match="roles must alternate"):
        render(tok, "hi", "ok")
