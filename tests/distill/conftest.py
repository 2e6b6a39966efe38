"""A tiny teacher/student pair and data on disk, shared by the distillation tests."""

from __future__ import annotations

import json

import pytest

from leaf.tiny import DEFAULT_CORPUS, build_model, build_tokenizer


@pytest.fixture(scope="session")
def distill_setup(tmp_path_factory):
    """Folder with teacher/, student/ (llama3 template), d.jsonl (8 originals), cf.jsonl (4 counterfactuals)."""
    root = tmp_path_factory.mktemp("distill")
    tok = build_tokenizer(style="llama3")
    for name, hidden, layers, seed in (("teacher", 32, 2, 0), ("student", 16, 1, 1)):
        model = build_model(tok, hidden_size=hidden, num_layers=layers, seed=seed)
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    with (root / "d.jsonl").open("w") as fh:
        for i in range(8):
            fh.write(json.dumps({"id": i, "instruction": DEFAULT_CORPUS[i % 7], "response": DEFAULT_CORPUS[(i + 1) % 7][: 20 + 3 * i]}) + "\n")
    with (root / "cf.jsonl").open("w") as fh:
        for i in range(4):
            rec = {
                "id": f"{i}-0", "source_id": i, "instruction": DEFAULT_CORPUS[i % 7][5:],
                "response": DEFAULT_CORPUS[(i + 1) % 7][: 20 + 3 * i], "loss_start": None if i % 2 else 4,
                "strategy": "span", "level": "instruction", "removed": [], "method": "gradient", "intervention": "delete",
            }
            fh.write(json.dumps(rec) + "\n")
    return root


@pytest.fixture(scope="session")
def other_teacher(tmp_path_factory):
    """A teacher with a ChatML tokenizer of another vocabulary size (the student's is llama3-style, 512)."""
    root = tmp_path_factory.mktemp("xtok")
    tok = build_tokenizer([c[::-1] for c in DEFAULT_CORPUS] + DEFAULT_CORPUS, style="chatml", vocab_size=400)
    build_model(tok, hidden_size=32, num_layers=2, seed=3).save_pretrained(root / "teacher")
    tok.save_pretrained(root / "teacher")
    return root / "teacher"
