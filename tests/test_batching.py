"""leaf.batching: padding both ways, and batches that halve themselves when memory runs out."""

from __future__ import annotations

import pytest
import torch

from leaf.batching import IGNORE_INDEX, halving, length_batches, loss_positions, pad


def test_pad_right_and_left_with_masks():
    ids, mask = pad([[1, 2, 3], [4]], 0)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad([[1, 2, 3], [4]], 9, side="left", multiple_of=4)
    assert ids.tolist() == [[9, 1, 2, 3], [9, 9, 9, 4]] and mask.tolist() == [[0, 1, 1, 1], [0, 0, 0, 1]]
    labels, _ = pad([[5, IGNORE_INDEX], [7]], IGNORE_INDEX)
    assert loss_positions(labels).tolist() == [[False], [False]]
    assert loss_positions(torch.tensor([[IGNORE_INDEX, 3, 4]])).tolist() == [[True, True]]


def test_halving_retries_smaller_batches_and_skips_what_never_fits():
    calls, skipped = [], []

    def run(batch):  # "memory" for 2 items at once; item 13 never fits
        calls.append(list(batch))
        if len(batch) > 2 or 13 in batch:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [x * 10 for x in batch]

    got = halving([1, 2, 3, 13, 5], run, lambda item, why: skipped.append((item, why)))
    assert got == [10, 20, 30, None, 50]
    assert [s[0] for s in skipped] == [13] and "out of memory even alone" in skipped[0][1]
    assert calls[0] == [1, 2, 3, 13, 5] and [13] in calls
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors are not swallowed
        halving([1, 2], lambda b: (_ for _ in ()).throw(RuntimeError("shape mismatch")), lambda i, w: None)


def test_generation_halves_its_batch_on_out_of_memory(monkeypatch, tiny_llama, llama_tok):
    from leaf.generation import generate

    prompts = ["What is 2 plus 2?", "Name a fruit.", "Count to three.", "Say hi."]
    want = generate(tiny_llama, llama_tok, prompts, max_new_tokens=4, batch_size=4)
    real = tiny_llama.generate

    def small_memory(*args, **kwargs):
        if kwargs["input_ids"].shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(tiny_llama, "generate", small_memory)
    assert generate(tiny_llama, llama_tok, prompts, max_new_tokens=4, batch_size=4) == want


def test_length_batches_bound_count_and_padded_tokens():
    lengths = [64, 2048, 70, 1460, 300, 64, 900, 2048, 128]
    batches = length_batches(lengths, batch_size=4, max_tokens=2100)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every item exactly once
    for b in batches:
        assert len(b) <= 4
        assert max(lengths[i] for i in b) * len(b) <= 2100 or len(b) == 1  # a too-long item stands alone
    assert [lengths[i] for i in batches[0]] == [64, 64, 70, 128]  # similar lengths together
    assert length_batches(lengths, batch_size=4) == [sorted(range(9), key=lambda i: (lengths[i], i))[k:k + 4]
                                                     for k in (0, 4, 8)]
    assert length_batches([5, 5, 5], 2, longest_first=True) == [[0, 1], [2]]


def test_generation_with_a_token_budget_gives_the_same_answers(tiny_llama, llama_tok):
    from leaf.generation import generate

    prompts = ["What is 2 plus 2?", "Name a fruit that is yellow and long, please, if you can.", "Hi.", "Count."]
    want = generate(tiny_llama, llama_tok, prompts, max_new_tokens=4, batch_size=4)
    assert generate(tiny_llama, llama_tok, prompts, max_new_tokens=4, batch_size=4, max_tokens_per_batch=40) == want
