"""Training examples: which tokens carry the loss, counterfactual records, padding, tokenizer checks."""

from __future__ import annotations

import json

import pytest
from leaf.data.records import DataError, Sample
from leaf.batching import IGNORE_INDEX
from leaf.distill.data import (
    DistillCollator,
    ExampleDataset,
    TokenizerMismatch,
    build_example,
    check_tokenizers,
    load_examples,
    shared_vocab_size,
)
from leaf.tiny import build_model, build_tokenizer

INSTR = "Tom has 3 apples and buys 5 more. How many apples does he have now?"
RESP = "First add the numbers. The answer is 8."


def _loss_text(tok, ex):
    return tok.decode([y for y in ex.labels if y != IGNORE_INDEX])


@pytest.mark.parametrize(
    "style,end", [("llama3", "<|eot_id|>"), ("chatml", "<|im_end|>"), ("none", "</s>")]
)
def test_loss_covers_response_and_end_of_turn(tokenizers, style, end):
    tok = tokenizers[style]
    ex = build_example(tok, Sample(1, INSTR, RESP))
    assert _loss_text(tok, ex) == RESP + end
    # every loss token lies after the prompt, and labels equal the ids there
    first = next(i for i, y in enumerate(ex.labels) if y != IGNORE_INDEX)
    prompt_len = len(tok(tok.apply_chat_template([{"role": "user", "content": INSTR}], tokenize=False, add_generation_prompt=True), add_special_tokens=False)["input_ids"]) if style != "none" else None
    if prompt_len is not None:
        assert first == prompt_len
    assert all(y in (IGNORE_INDEX, t) for y, t in zip(ex.labels, ex.input_ids))
    no_eos = build_example(tok, Sample(1, INSTR, RESP), include_eos=False)
    assert _loss_text(tok, no_eos) == RESP
    assert no_eos.input_ids == ex.input_ids


def test_loss_start_masks_the_first_response_segment(llama_tok):
    start = RESP.index("The answer")
    ex = build_example(llama_tok, Sample("a", INSTR, RESP), counterfactual=True, loss_start=start)
    assert ex.key == "cf:a" and ex.counterfactual
    # the token holding " The" straddles the boundary (BPE glues the space); it counts
    assert _loss_text(llama_tok, ex).strip() == RESP[start:] + "<|eot_id|>"
    full = build_example(llama_tok, Sample("a", INSTR, RESP))
    assert ex.n_loss_tokens < full.n_loss_tokens


def test_truncation_drops_examples_without_loss_tokens(llama_tok):
    ex = build_example(llama_tok, Sample(1, INSTR, RESP), max_length=10)
    assert ex is None
    full = build_example(llama_tok, Sample(1, INSTR, RESP))
    cut = build_example(llama_tok, Sample(1, INSTR, RESP), max_length=len(full.input_ids) - 3)
    assert len(cut.input_ids) == len(full.input_ids) - 3
    assert cut.n_loss_tokens == full.n_loss_tokens - 3


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_load_examples_originals_then_counterfactuals(tmp_path, llama_tok):
    data = _write(tmp_path / "d.jsonl", [{"id": 1, "instruction": INSTR, "response": RESP}, {"id": 2, "instruction": "Say hi.", "response": "hi"}])
    cf = _write(
        tmp_path / "cf.jsonl",
        [
            {"id": "1-0", "source_id": 1, "instruction": "Tom has apples and buys 5 more. How many?", "response": RESP, "loss_start": None},
            {"id": "1-1", "source_id": 1, "instruction": INSTR, "response": RESP, "loss_start": 5, "level": "response"},
        ],
    )
    exs = load_examples(llama_tok, data, cf)
    assert [e.key for e in exs] == ["orig:1", "orig:2", "cf:1-0", "cf:1-1"]
    assert [e.counterfactual for e in exs] == [False, False, True, True]
    assert _loss_text(llama_tok, exs[3]) == RESP[5:] + "<|eot_id|>"  # RESP[5] is the space before "add"
    assert exs[3].n_loss_tokens < exs[0].n_loss_tokens


def test_bad_loss_start_names_file_line_field(tmp_path, llama_tok):
    cf = _write(tmp_path / "cf.jsonl", [{"id": "x", "instruction": INSTR, "response": "short", "loss_start": 0}, {"id": "y", "instruction": INSTR, "response": "short", "loss_start": 99}])
    with pytest.raises(DataError) as err:
        load_examples(llama_tok, None, cf)
    assert f"{cf}:2: field 'loss_start'" in str(err.value)


def test_collator_pads_dynamically(llama_tok):
    exs = [build_example(llama_tok, Sample(i, INSTR[: 20 + 10 * i], RESP[: 10 + 5 * i])) for i in range(3)]
    ds = ExampleDataset(exs)
    batch = DistillCollator(llama_tok.pad_token_id)([ds[0], ds[2]])
    longest = max(len(exs[0].input_ids), len(exs[2].input_ids))
    assert batch["input_ids"].shape == (2, longest)  # no padding to a global max length
    n0 = len(exs[0].input_ids)
    assert batch["attention_mask"][0].tolist() == [1] * n0 + [0] * (longest - n0)
    assert (batch["input_ids"][0, n0:] == llama_tok.pad_token_id).all()
    assert (batch["labels"][0, n0:] == IGNORE_INDEX).all()
    assert batch["labels"][0, :n0].tolist() == exs[0].labels
    assert batch["index"].tolist() == [0, 2]
    b8 = DistillCollator(llama_tok.pad_token_id, pad_to_multiple_of=8)([ds[0]])
    assert b8["input_ids"].shape[1] % 8 == 0 and b8["input_ids"].shape[1] >= n0


def test_tokenizer_mismatch_is_refused(tokenizers):
    check_tokenizers(tokenizers["llama3"], build_tokenizer(style="llama3"))  # same training, same vocab
    with pytest.raises(TokenizerMismatch, match="differ"):
        check_tokenizers(tokenizers["llama3"], tokenizers["chatml"])


def test_shared_vocab_slices_padded_rows(llama_tok):
    small = build_model(llama_tok, hidden_size=16, num_layers=1)
    big = build_model(llama_tok, hidden_size=16, num_layers=1)
    big.resize_token_embeddings(len(llama_tok) + 64)
    assert shared_vocab_size(small, big, llama_tok) == len(llama_tok)
    assert shared_vocab_size(big, None, llama_tok) == len(llama_tok) + 64
    with pytest.raises(TokenizerMismatch):
        shared_vocab_size(small, None, llama_tok, teacher_vocab=len(llama_tok) - 1)


def test_interleaved_sampler_spreads_counterfactuals_evenly():
    from leaf.distill.data import InterleavedSampler

    flags = [False] * 30 + [True] * 10  # a quarter are counterfactual
    s = InterleavedSampler(flags, seed=3)
    order = list(s)
    assert sorted(order) == list(range(40))
    for w in (4, 8):
        for start in range(0, 40, w):
            n_cf = sum(flags[i] for i in order[start : start + w])
            assert abs(n_cf - w / 4) <= 1
    assert list(s) == order  # same epoch, same order (resume)
    s.set_epoch(1)
    assert list(s) != order
    assert list(InterleavedSampler([False] * 5, seed=0)) != [] and len(InterleavedSampler(flags)) == 40
