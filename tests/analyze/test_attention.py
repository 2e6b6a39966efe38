"""Attention shares: token grouping, sums over the prompt, and a model with known attention."""

from __future__ import annotations

import pytest
import torch

from leaf.analyze.attention import density_ratio, group_masses, layer_shares, prompt_shares, token_groups
from leaf.analyze.run import analyze_sample
from leaf.analyze.spans import SpanSample
from leaf.data.render import encode, render
from leaf.tiny import build_model

SAMPLE = SpanSample(
    id="s1",
    instruction="Tom has 3 apples and buys 5 more. Ignore the hint: 42. How many apples does he have?",
    response="First add the numbers: 3 + 5 = 8. The answer is 8.",
    spans=[(34, 53)],  # "Ignore the hint: 42"
)


def test_token_groups_hand_made():
    # text: "<s>" [0,3) template | "ab cd ef" [3,11) instruction | "\n" template | "xyz uvw" [12,19) response
    offsets = [(0, 0), (0, 3), (3, 5), (5, 8), (8, 11), (11, 12), (12, 15), (15, 19)]
    g = token_groups(offsets, (3, 11), (12, 19), [(6, 8)])
    assert g.span == [3]
    assert g.rest == [2, 4]
    assert g.template == [0, 1, 5]  # the zero-width special token counts as template, not instruction
    assert g.response == [6, 7]
    assert g.prompt_length == 6 and g.length == 8
    # a span that only touches a token boundary does not take the neighbour
    assert token_groups(offsets, (3, 11), (12, 19), [(5, 8)]).span == [3]
    # a span straddling two tokens takes both
    assert token_groups(offsets, (3, 11), (12, 19), [(7, 9)]).span == [3, 4]
    with pytest.raises(ValueError, match="response"):
        token_groups(offsets, (3, 11), (30, 40), [(6, 8)])


@pytest.mark.parametrize("style", ["llama3", "chatml", "none"])
def test_span_tokens_cover_exactly_the_flagged_words(tokenizers, style):
    tok = tokenizers[style]
    r = render(tok, SAMPLE.instruction, SAMPLE.response)
    enc = encode(tok, r.text)
    flagged = [r.instruction_to_text(s, e) for s, e in SAMPLE.spans]
    g = token_groups(enc.offsets, r.instruction_span, r.response_span, flagged)
    covered = r.text[enc.offsets[g.span[0]][0] : enc.offsets[g.span[-1]][1]]
    assert covered.strip() == "Ignore the hint: 42"
    assert g.span == list(range(g.span[0], g.span[-1] + 1))  # contiguous
    instr_text = "".join(r.text[enc.offsets[i][0] : enc.offsets[i][1]] for i in g.instruction)
    assert instr_text.replace(" ", "") == SAMPLE.instruction.replace(" ", "")
    assert "".join(r.text[enc.offsets[i][0] : enc.offsets[i][1]] for i in g.response).replace(" ", "") == (
        SAMPLE.response.replace(" ", "")
    )
    assert max(g.template) < g.response[0] and set(g.template).isdisjoint(g.instruction)


def _eager(tok, arch, seed=0, layers=3):
    return build_model(tok, arch=arch, hidden_size=32, num_layers=layers, seed=seed, attn_implementation="eager")


def _independent_shares(model, tok, sample):
    """Per layer (span, rest, template) shares from output_attentions, with masks built by plain search."""
    r = render(tok, sample.instruction, sample.response)
    enc = encode(tok, r.text)
    i0 = r.text.index(sample.instruction.strip())
    flagged = [(i0 + s, i0 + e) for s, e in sample.spans]  # the instruction appears verbatim in the text
    r0 = r.text.index(sample.response.strip(), i0 + len(sample.instruction.strip()))
    r1 = r0 + len(sample.response.strip())
    is_resp = [s < r1 and e > r0 and e > s for s, e in enc.offsets]
    first = is_resp.index(True)
    kind = []
    for s, e in enc.offsets[:first]:
        if e > s and s < i0 + len(sample.instruction.strip()) and e > i0:
            kind.append("span" if any(s < b and e > a for a, b in flagged) else "rest")
        else:
            kind.append("template")
    with torch.no_grad():
        att = model(torch.tensor([enc.input_ids]), output_attentions=True).attentions
    out = []
    for layer in att:
        a = layer[0].double()  # [H, T, T]
        acc = {"span": 0.0, "rest": 0.0, "template": 0.0}
        n = 0
        for h in range(a.shape[0]):
            for q in range(len(enc.offsets)):
                if not is_resp[q]:
                    continue
                total = float(a[h, q, :first].sum())
                for k in range(first):
                    acc[kind[k]] += float(a[h, q, k]) / total
                n += 1
        out.append({k: v / n for k, v in acc.items()})
    return out, kind


@pytest.mark.parametrize("style,arch", [("llama3", "llama"), ("chatml", "qwen2")])
def test_shares_match_output_attentions_and_sum_to_one(tokenizers, style, arch):
    tok = tokenizers[style]
    model = _eager(tok, arch, seed=3)
    rec = analyze_sample(model, tok, SAMPLE, max_length=4096, profile=True)
    expected, kind = _independent_shares(model, tok, SAMPLE)
    assert rec["n_span_tokens"] == kind.count("span") > 0
    assert rec["n_rest_tokens"] == kind.count("rest")
    assert rec["n_template_tokens"] == kind.count("template")
    pl = rec["per_layer"]
    assert len(pl["share_on_span"]) == 3
    for layer, exp in enumerate(expected):
        assert pl["share_on_span"][layer] == pytest.approx(exp["span"], abs=1e-6)
        assert pl["share_on_rest"][layer] == pytest.approx(exp["rest"], abs=1e-6)
        assert pl["share_on_template"][layer] == pytest.approx(exp["template"], abs=1e-6)
        total = pl["share_on_span"][layer] + pl["share_on_rest"][layer] + pl["share_on_template"][layer]
        assert total == pytest.approx(1.0, abs=1e-6)
    assert rec["share_on_span"] == pytest.approx(sum(e["span"] for e in expected) / 3, abs=1e-6)
    # the per-token profile of the instruction adds up to span + rest in each layer
    for layer in range(3):
        prof = [t["attention"][layer] for t in rec["tokens"]]
        assert sum(prof) == pytest.approx(pl["share_on_span"][layer] + pl["share_on_rest"][layer], abs=1e-5)
        assert sum(p for p, t in zip(prof, rec["tokens"]) if t["span"]) == pytest.approx(
            pl["share_on_span"][layer], abs=1e-5
        )


def test_group_masses_cover_all_attention(tokenizers):
    tok = tokenizers["llama3"]
    model = _eager(tok, "llama", seed=5, layers=2)
    r = render(tok, SAMPLE.instruction, SAMPLE.response)
    enc = encode(tok, r.text)
    g = token_groups(enc.offsets, r.instruction_span, r.response_span, [r.instruction_to_text(34, 53)])
    with torch.no_grad():
        att = model(torch.tensor([enc.input_ids]), output_attentions=True).attentions
    m = group_masses(att[1], g)
    assert m.shape == (4, len(g.response), 4)
    torch.testing.assert_close(m.sum(-1), torch.ones(4, len(g.response)), atol=1e-5, rtol=0)
    # response mass of query q = sum of its row over keys >= first response token
    q = g.response[-1]
    torch.testing.assert_close(m[:, -1, 3], att[1][0, :, q, g.response[0] :].sum(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(prompt_shares(m).sum(-1), torch.ones(4, len(g.response)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("style,arch", [("llama3", "llama"), ("chatml", "qwen2"), ("none", "llama")])
def test_uniform_attention_gives_token_count_shares(tokenizers, style, arch):
    """Zero query/key projections make every score 0: causal attention is uniform over keys <= query."""
    tok = tokenizers[style]
    model = _eager(tok, arch, seed=1)
    with torch.no_grad():
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                proj.weight.zero_()
                if proj.bias is not None:
                    proj.bias.zero_()
    rec = analyze_sample(model, tok, SAMPLE, max_length=4096, profile=False)
    n_span, n_rest, n_tmpl = rec["n_span_tokens"], rec["n_rest_tokens"], rec["n_template_tokens"]
    prompt = n_span + n_rest + n_tmpl
    for layer in range(3):
        assert rec["per_layer"]["share_on_span"][layer] == pytest.approx(n_span / prompt, abs=1e-6)
        assert rec["per_layer"]["share_on_rest"][layer] == pytest.approx(n_rest / prompt, abs=1e-6)
        assert rec["per_layer"]["share_on_template"][layer] == pytest.approx(n_tmpl / prompt, abs=1e-6)
    # query at position q (0-based) sees q + 1 keys, of which q + 1 - prompt are response keys
    r = render(tok, SAMPLE.instruction, SAMPLE.response)
    g = token_groups(encode(tok, r.text).offsets, r.instruction_span, r.response_span, [])
    raw = sum((q + 1 - prompt) / (q + 1) for q in g.response) / len(g.response)
    assert rec["raw_share_on_response"] == pytest.approx(raw, abs=1e-6)
    assert rec["span_density_ratio"] == pytest.approx(1.0, abs=1e-5)


def test_density_ratio():
    assert density_ratio(0.2, 0.4, 2, 8) == pytest.approx((0.2 / 2) / (0.4 / 8))
    assert density_ratio(0.2, 0.0, 2, 8) is None
    assert density_ratio(0.2, 0.4, 0, 8) is None


def test_layer_shares_rejects_mismatched_lengths():
    g = token_groups([(0, 1), (1, 2), (2, 3)], (0, 2), (2, 3), [(0, 1)])
    with pytest.raises(ValueError, match="covers 4 tokens"):
        layer_shares([torch.full((1, 1, 4, 4), 0.25)], g)


def test_skips_long_and_spanless_samples(tokenizers):
    tok = tokenizers["llama3"]
    model = _eager(tok, "llama", layers=1)
    assert "longer than" in analyze_sample(model, tok, SAMPLE, max_length=5, profile=False)["skipped"]
    empty = SpanSample("e", SAMPLE.instruction, SAMPLE.response, [(3, 3)])
    assert analyze_sample(model, tok, empty, max_length=4096, profile=False)["skipped"].startswith("no token")


@pytest.mark.parametrize("style,arch", [("llama3", "llama"), ("chatml", "qwen2")])
def test_hooks_give_the_same_numbers_as_output_attentions(tokenizers, style, arch):
    tok = tokenizers[style]
    model = _eager(tok, arch, seed=7)
    a = analyze_sample(model, tok, SAMPLE, max_length=4096, profile=True, collect="output_attentions")
    before = sum(len(m._forward_hooks) for m in model.modules())  # transformers adds its own on first use
    b = analyze_sample(model, tok, SAMPLE, max_length=4096, profile=True, collect="hooks")
    for key in ("share_on_span", "share_on_rest", "share_on_template", "raw_share_on_response"):
        assert b["per_layer"][key] == pytest.approx(a["per_layer"][key], abs=1e-6)
    assert [t["attention"] for t in b["tokens"]] == [pytest.approx(t["attention"], abs=1e-6) for t in a["tokens"]]
    # our hooks are removed afterwards (transformers keeps hooks of its own)
    assert sum(len(m._forward_hooks) for m in model.modules()) == before


def test_hooks_refuse_a_model_without_attention_weights(tokenizers):
    tok = tokenizers["llama3"]
    model = build_model(tok, hidden_size=32, num_layers=1, attn_implementation="sdpa")
    before = sum(len(m._forward_hooks) for m in model.modules())
    with pytest.raises(RuntimeError, match="eager"):
        analyze_sample(model, tok, SAMPLE, max_length=4096, profile=False, collect="hooks")
    assert sum(len(m._forward_hooks) for m in model.modules()) == before
