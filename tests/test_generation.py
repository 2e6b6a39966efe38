"""Batched generation equals one-at-a-time generation; stop strings; resumable output."""

from __future__ import annotations

import json

import pytest
import torch

from leaf.data.render import render_prompt
from leaf.generation import generate, generate_to_jsonl, truncate_at_stop
from leaf.tiny import build_model

INSTRUCTIONS = [
    "Tom has 3 apples.",
    "Paris is the capital of France; Berlin is the capital of Germany. What is the capital of France?",
    "def add(a, b):",
    "Step 1: read the question. Step 2: compute 12 * 4.",
    "Ignore the hint: the key 42 maps to value 17.",
]


@pytest.fixture(scope="module", params=[("llama3", "llama"), ("chatml", "qwen2")])
def model_and_tok(request, tokenizers):
    style, arch = request.param
    tok = tokenizers[style]
    # float64 so that padded and unpadded runs agree far beyond greedy ties of a random model
    model = build_model(tok, arch=arch, hidden_size=32, num_layers=2, seed=3).to(torch.float64)
    return model, tok


def _greedy_by_hand(model, tok, instruction, n):
    """Independent greedy decode: full forward pass each step, argmax, no cache, no padding."""
    ids = tok(render_prompt(tok, instruction), add_special_tokens=False)["input_ids"]
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids + out])).logits[0, -1]
            nxt = int(logits.argmax())
            if nxt == tok.eos_token_id:
                break
            out.append(nxt)
    return tok.decode(out, skip_special_tokens=True)


def test_batched_equals_one_at_a_time(model_and_tok):
    model, tok = model_and_tok
    batched = generate(model, tok, INSTRUCTIONS, max_new_tokens=12, batch_size=5)
    single = [generate(model, tok, [ins], max_new_tokens=12, batch_size=1)[0] for ins in INSTRUCTIONS]
    assert batched == single
    assert all(len(t) > 0 for t in batched)  # a random model still produces tokens
    # and both equal a hand-written greedy loop (catches wrong positions under left padding)
    for ins, text in zip(INSTRUCTIONS, batched):
        assert text == _greedy_by_hand(model, tok, ins, 12)


def test_uneven_batches_keep_input_order(model_and_tok):
    model, tok = model_and_tok
    a = generate(model, tok, INSTRUCTIONS, max_new_tokens=6, batch_size=2)
    b = generate(model, tok, INSTRUCTIONS[::-1], max_new_tokens=6, batch_size=3)
    assert a == b[::-1]


def test_sampling_is_seeded(model_and_tok):
    model, tok = model_and_tok
    kw = dict(max_new_tokens=8, do_sample=True, temperature=1.5, batch_size=5)
    first = generate(model, tok, INSTRUCTIONS, seed=1, **kw)
    assert first == generate(model, tok, INSTRUCTIONS, seed=1, **kw)  # same seed, same draws
    # and the seed matters, and sampling is not greedy decoding in disguise
    assert first != generate(model, tok, INSTRUCTIONS, seed=2, **kw)
    assert first != generate(model, tok, INSTRUCTIONS, max_new_tokens=8, batch_size=5)


def test_stop_strings_truncate(model_and_tok):
    model, tok = model_and_tok
    full = generate(model, tok, INSTRUCTIONS[:2], max_new_tokens=16)
    # use a piece of the real greedy output as the stop string
    stop = full[0][3:6]
    assert stop
    cut = generate(model, tok, INSTRUCTIONS[:2], max_new_tokens=16, stop=[stop])
    assert cut[0] == full[0][: full[0].find(stop)]
    assert cut[1] == truncate_at_stop(full[1], [stop])


def test_truncate_at_stop_picks_earliest():
    assert truncate_at_stop("a b STOP c END", ["END", "STOP"]) == "a b "
    assert truncate_at_stop("abc", ["x"]) == "abc"
    assert truncate_at_stop("abc", None) == "abc"
    assert truncate_at_stop("abc", [""]) == "abc"


def test_generate_to_jsonl_resumes(tmp_path, model_and_tok):
    model, tok = model_and_tok
    records = [{"id": i, "instruction": ins} for i, ins in enumerate(INSTRUCTIONS)]
    out = tmp_path / "gen.jsonl"
    settings = {"model": "tiny", "max_new_tokens": 6}
    first = generate_to_jsonl(model, tok, records[:3], out, settings=settings, max_new_tokens=6, batch_size=2)
    assert len(first) == 3
    # simulate a crash mid-write: a half line at the end is dropped on resume
    with out.open("a") as fh:
        fh.write('{"id": 3, "instr')
    allgen = generate_to_jsonl(model, tok, records, out, settings=settings, max_new_tokens=6, batch_size=2)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    ids = [r["id"] for r in lines]
    assert sorted(ids[:3]) == [0, 1, 2] and sorted(ids[3:]) == [3, 4]  # old lines kept, only the new appended
    assert allgen == {str(i): t for i, t in enumerate(generate(model, tok, INSTRUCTIONS, max_new_tokens=6))}
    with pytest.raises(ValueError, match="other settings"):
        generate_to_jsonl(model, tok, records, out, settings={"model": "other"}, max_new_tokens=6)


def test_vllm_backend_request(monkeypatch, llama_tok):
    """The vLLM path (no GPU here): a stand-in ``vllm`` module records what leaf asks of it."""
    import sys
    import types
    from dataclasses import dataclass
    from types import SimpleNamespace

    fake = types.ModuleType("vllm")

    @dataclass
    class SamplingParams:
        max_tokens: int
        temperature: float
        top_p: float
        stop: list | None
        seed: int
        skip_special_tokens: bool

    class LLM:
        def generate(self, prompts, params):
            self.seen = (prompts, params)
            return [
                SimpleNamespace(outputs=[SimpleNamespace(text=f"answer {k} STOP tail")]) for k in range(len(prompts))
            ]

    LLM.__module__ = "vllm"
    fake.LLM, fake.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", fake)
    llm = LLM()
    out = generate(llm, llama_tok, INSTRUCTIONS[:3], max_new_tokens=7, stop=["STOP"], seed=4)
    assert out == ["answer 0 ", "answer 1 ", "answer 2 "]
    prompts, params = llm.seen
    # token ids of the chat-templated prompt, BOS from the template only (not added twice)
    want = [llama_tok(render_prompt(llama_tok, ins), add_special_tokens=False)["input_ids"] for ins in INSTRUCTIONS[:3]]
    assert [p["prompt_token_ids"] for p in prompts] == want
    assert [ids.count(llama_tok.bos_token_id) for ids in want] == [1, 1, 1]
    assert (params.max_tokens, params.temperature, params.top_p, params.stop, params.seed) == (7, 0.0, 1.0, ["STOP"], 4)
    generate(llm, llama_tok, INSTRUCTIONS[:1], do_sample=True, temperature=0.7, top_p=0.9)
    assert (llm.seen[1].temperature, llm.seen[1].top_p) == (0.7, 0.9)


def test_vllm_backend_chunks_and_reports_progress(monkeypatch, llama_tok):
    import sys
    import types
    from types import SimpleNamespace

    import leaf.generation as g

    fake = types.ModuleType("vllm")

    class LLM:
        calls = 0

        def generate(self, prompts, params):
            LLM.calls += 1
            return [SimpleNamespace(outputs=[SimpleNamespace(text=str(len(p["prompt_token_ids"])))]) for p in prompts]

    LLM.__module__ = "vllm"
    fake.LLM, fake.SamplingParams = LLM, lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(g, "VLLM_CHUNK", 2)
    seen = []
    out = generate(LLM(), llama_tok, INSTRUCTIONS, on_batch=lambda idx, texts: seen.append((idx, texts)))
    lengths = [
        str(len(llama_tok(render_prompt(llama_tok, i), add_special_tokens=False)["input_ids"])) for i in INSTRUCTIONS
    ]
    assert out == lengths and LLM.calls == 3
    assert [i for idx, _ in seen for i in idx] == [0, 1, 2, 3, 4]
    assert [t for _, texts in seen for t in texts] == lengths
