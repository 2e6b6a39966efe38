"""leaf.models: what device=auto and dtype=auto mean, and loading a frozen model through from_pretrained."""

from __future__ import annotations

import torch

from leaf.models import input_device, load_model, load_tokenizer, resolve_device, resolve_dtype, torch_dtype


def test_auto_device_and_dtype_follow_the_hardware(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_dtype("auto") == "float32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_dtype("auto") == "bfloat16"
    assert resolve_dtype("auto", "cpu") == "float32"  # bf16 only where the model will run on a GPU
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_dtype("auto") == "float32"
    assert resolve_device("cuda:1") == "cuda:1" and resolve_dtype("float16") == "float16"
    assert torch_dtype("float16") is torch.float16


def test_load_model_is_frozen_in_eval_mode_and_loads_what_was_saved(tmp_path, llama_tok, tiny_llama):
    tiny_llama.save_pretrained(tmp_path)
    llama_tok.save_pretrained(tmp_path)
    model = load_model(str(tmp_path), dtype="auto", device="auto")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert input_device(model).type == ("cuda" if torch.cuda.is_available() else "cpu")
    for (name, a), b in zip(tiny_llama.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    trainable = load_model(str(tmp_path), dtype="float32", device="cpu", trainable=True)
    assert all(p.requires_grad for p in trainable.parameters())
    tok = load_tokenizer(str(tmp_path))
    assert tok.is_fast and tok.pad_token is not None


def test_folders_that_hold_no_model_are_one_line_errors(tmp_path, llama_tok):
    import pytest

    from leaf.config import ConfigError

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"empty: cannot load the tokenizer \("):
        load_tokenizer(str(empty))
    tokenizer_only = tmp_path / "tok"
    llama_tok.save_pretrained(tokenizer_only)
    with pytest.raises(ConfigError, match=r"tok: cannot load the model \(") as err:
        load_model(str(tokenizer_only))
    assert "\n" not in str(err.value)
