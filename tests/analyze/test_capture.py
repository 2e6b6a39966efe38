"""leaf.analyze.capture: hooks see exactly the weights output_attentions returns, one layer at a time."""

from __future__ import annotations

import pytest
import torch

from leaf.analyze.capture import attention_hooks, attention_modules
from leaf.tiny import build_model


@pytest.fixture(scope="module")
def eager(llama_tok):
    model = build_model(llama_tok, arch="llama", hidden_size=32, num_layers=3, seed=5)
    model.set_attn_implementation("eager")
    return model.eval()


def test_hooks_see_the_weights_output_attentions_returns(eager, llama_tok):
    ids = torch.tensor([llama_tok("Tom has 3 apples and 2 pears.")["input_ids"]])
    seen: dict[int, torch.Tensor] = {}
    with torch.no_grad(), attention_hooks(eager, lambda i, w: seen.__setitem__(i, w.clone())) as n:
        eager(input_ids=ids)
    assert n == 3 and sorted(seen) == [0, 1, 2]
    with torch.no_grad():
        want = eager(input_ids=ids, output_attentions=True).attentions
    for i, w in enumerate(want):
        torch.testing.assert_close(seen[i], w)
        torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))  # rows are distributions


def test_hooks_are_removed_and_sdpa_is_refused(eager, llama_tok):
    ids = torch.tensor([llama_tok("hi there")["input_ids"]])
    calls = []
    with torch.no_grad(), attention_hooks(eager, lambda i, w: calls.append(i)):
        eager(input_ids=ids)
    with torch.no_grad():
        eager(input_ids=ids)  # after the block: no hook left behind
    assert calls == [0, 1, 2]
    sdpa = build_model(llama_tok, arch="llama", hidden_size=32, num_layers=1, seed=5)
    sdpa.set_attn_implementation("sdpa")
    assert len(attention_modules(sdpa)) == 1
    with pytest.raises(RuntimeError, match="eager"), torch.no_grad(), attention_hooks(sdpa, lambda i, w: None):
        sdpa(input_ids=ids)
