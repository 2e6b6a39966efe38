"""GGUF sources: a tiny GGUF llama written with the gguf package, converted once and cached by hash."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from leaf import gguf as leaf_gguf  # noqa: E402
from leaf.models import load_model  # noqa: E402

V, D, F = 16, 8, 16
TEMPLATE = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"


def write_tiny(path: Path, arch: str = "llama", seed: int = 0) -> dict[str, np.ndarray]:
    """A one-block llama GGUF (float32 tensors, a byte-level vocabulary); returns its tensors."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny")
    w.add_context_length(32)
    w.add_embedding_length(D)
    w.add_block_count(1)
    w.add_feed_forward_length(F)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(V)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["<s>", "</s>", "ab"] + [chr(ord("a") + i) for i in range(V - 3)])
    w.add_token_types([3, 3] + [1] * (V - 2))
    w.add_token_merges(["a b"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_chat_template(TEMPLATE)
    rng = np.random.default_rng(seed)
    tensors = {"token_embd.weight": (V, D), "output.weight": (V, D), "blk.0.attn_q.weight": (D, D),
               "blk.0.attn_k.weight": (D, D), "blk.0.attn_v.weight": (D, D), "blk.0.attn_output.weight": (D, D),
               "blk.0.ffn_gate.weight": (F, D), "blk.0.ffn_up.weight": (F, D), "blk.0.ffn_down.weight": (D, F)}
    arrays = {name: (rng.standard_normal(shape) * 0.1).astype(np.float32) for name, shape in tensors.items()}
    for name in ("output_norm.weight", "blk.0.attn_norm.weight", "blk.0.ffn_norm.weight"):
        arrays[name] = np.ones(D, np.float32)
    for name, array in arrays.items():
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return arrays


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEAF_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "gguf"


def test_convert_then_cache_hit_keyed_by_hash(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "tiny.gguf"
    arrays = write_tiny(src)
    folder = Path(leaf_gguf.resolve(src))
    assert folder == cache / leaf_gguf.sha256(src)
    record = json.loads((folder / leaf_gguf.MARKER).read_text())
    assert record["architecture"] == "llama" and record["bytes"] == src.stat().st_size
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    model = load_model(str(src), dtype="float32", device="cpu")
    # the embedding and head are stored unpermuted: the converted weights are the written ones
    assert torch.equal(model.get_input_embeddings().weight, torch.from_numpy(arrays["token_embd.weight"]))
    assert torch.equal(model.lm_head.weight, torch.from_numpy(arrays["output.weight"]))
    from transformers import AutoTokenizer

    # the tiny vocabulary covers too few characters for load_tokenizer's offset probe: read the folder directly
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.apply_chat_template([{"role": "user", "content": "ab"}], tokenize=False) == "[ab]"

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(leaf_gguf, "convert", refuse)  # a second load is a cache hit
    assert Path(leaf_gguf.resolve(str(src))) == folder
    other = tmp_path / "other.gguf"
    write_tiny(other, seed=1)  # other bytes, other key
    monkeypatch.undo()
    assert Path(leaf_gguf.resolve(other)).name == leaf_gguf.sha256(other) != folder.name


def test_folder_holding_one_gguf_and_two_refused(tmp_path: Path, cache: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    write_tiny(one / "m.gguf")
    assert Path(leaf_gguf.resolve(one)).name == leaf_gguf.sha256(one / "m.gguf")
    write_tiny(one / "n.gguf", seed=2)
    with pytest.raises(leaf_gguf.GGUFError, match=r"holds 2 \.gguf files \(m\.gguf, n\.gguf\)"):
        leaf_gguf.resolve(one)
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    assert leaf_gguf.resolve(hf) == str(hf)  # a Hugging Face folder passes through
    assert leaf_gguf.resolve("org/name") == "org/name"


def test_unsupported_architecture_is_one_line(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "odd.gguf"
    write_tiny(src, arch="notanarch")
    with pytest.raises(leaf_gguf.GGUFError) as err:
        leaf_gguf.resolve(src)
    assert "'notanarch' is not supported" in str(err.value) and "\n" not in str(err.value)
    assert not any(cache.glob("*/config.json"))  # nothing half-written is left


def test_missing_gguf_package_is_one_line(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "tiny.gguf"
    write_tiny(src)
    real_import = builtins.__import__

    def no_gguf(name: str, *args: object, **kwargs: object) -> object:
        if name == "gguf":
            raise ImportError("No module named 'gguf'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gguf)
    assert leaf_gguf.main([str(src)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs the gguf package" in err and str(src) in err


def test_cached_finds_only_a_done_conversion(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "tiny.gguf"
    write_tiny(src)
    assert leaf_gguf.cached(src) is None  # nothing converted yet, and cached() converts nothing
    assert not cache.exists()
    assert leaf_gguf.cached(src) is None
    folder = leaf_gguf.resolve(src)
    assert leaf_gguf.cached(src) == folder
