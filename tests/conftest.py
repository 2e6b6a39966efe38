"""Shared fixtures: tiny tokenizers and models built locally (no downloads)."""

from __future__ import annotations

import pytest

from leaf.tiny import build_model, build_tokenizer


@pytest.fixture(autouse=True, scope="session")
def _code_sandbox_none_without_bubblewrap():
    """Where bubblewrap cannot run, code checks in tests run as with ``--code-sandbox none`` (the audit
    hook and limits); tests/checkers/test_sandbox_bwrap.py, which tests bubblewrap itself, then skips."""
    from leaf.checkers import _bwrap, sandbox

    if _bwrap.unavailable():
        init = sandbox._Box.__init__
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_bwrap, "require", lambda python=None: None)
            mp.setattr(sandbox._Box, "__init__",
                       lambda self, python, drop, isolate, mode="bwrap": init(self, python, drop, isolate, "none"))
            yield
    else:
        yield


@pytest.fixture(scope="session")
def tokenizers():
    """One locally trained tokenizer per template style: llama3, chatml, none."""
    return {style: build_tokenizer(style=None if style == "none" else style) for style in ("llama3", "chatml", "none")}


@pytest.fixture(scope="session")
def llama_tok(tokenizers):
    return tokenizers["llama3"]


@pytest.fixture(scope="session")
def tiny_llama(llama_tok):
    return build_model(llama_tok, arch="llama", hidden_size=32, num_layers=2, seed=0)


@pytest.fixture(scope="session")
def tiny_qwen(tokenizers):
    return build_model(tokenizers["chatml"], arch="qwen2", hidden_size=32, num_layers=2, seed=1)
