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


def test_max_memory_parses_into_accelerates_dict():
    import pytest

    from leaf.config import ConfigError
    from leaf.models import parse_max_memory, parse_size

    assert parse_max_memory("0=70GiB,1=70GiB,cpu=100GiB") == {0: 70 * 2**30, 1: 70 * 2**30, "cpu": 100 * 2**30}
    assert parse_max_memory(" cuda:3 = 80GB , disk=1TB ") == {3: 80 * 10**9, "disk": 10**12}
    assert parse_max_memory({0: "1.5GiB", "cpu": 1024}) == {0: int(1.5 * 2**30), "cpu": 1024}
    assert parse_max_memory(None) is None and parse_max_memory("") is None
    assert parse_size("512MiB") == 2**29 and parse_size("2048") == 2048 and parse_size("1.5kb") == 1500
    for bad, msg in [("0:70GiB", "not device=size"), ("gpu0=1GiB", "unknown device 'gpu0'"),
                     ("0=70GiB,0=1GiB", "given twice"), ("0=lots", "memory size 'lots'"), ("0=7PB", "use a number")]:
        with pytest.raises(ConfigError, match=msg) as err:
            parse_max_memory(bad)
        assert "\n" not in str(err.value)


def test_weight_bytes_are_counted_from_the_config(tmp_path, tiny_llama):
    from leaf.models import weight_bytes

    tiny_llama.save_pretrained(tmp_path)
    n = sum(p.numel() for p in tiny_llama.parameters())
    assert weight_bytes(str(tmp_path), "float32") == (4 * n, "float32")
    assert weight_bytes(str(tmp_path), "bfloat16") == (2 * n, "bfloat16")


def test_a_model_that_cannot_fit_is_refused_before_loading_in_one_line(tmp_path, monkeypatch, llama_tok, tiny_llama):
    import pytest

    import leaf.models as models
    from leaf.config import ConfigError

    tiny_llama.save_pretrained(tmp_path)
    llama_tok.save_pretrained(tmp_path)
    need = 4 * sum(p.numel() for p in tiny_llama.parameters())
    loaded = []
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained",
                        lambda *a, **k: loaded.append(k) or pytest.fail("must not load"))
    # one device too small (the probe is faked: the host has less free than the weights need)
    monkeypatch.setattr(models, "free_memory", lambda device: need // 2 if device == "cpu" else None)
    with pytest.raises(models.ModelTooLarge, match=r"^teacher .*: needs about 0 GiB of weights in float32; cpu has 0 GiB "
                                                  r"free: use --teacher-device-map auto") as err:
        models.load_model(str(tmp_path), dtype="float32", device="cpu", what="teacher",
                          hint="use --teacher-device-map auto (with --max-memory) or a smaller --dtype")
    assert isinstance(err.value, ConfigError) and "\n" not in str(err.value)
    # a max_memory whose sum is too small (it implies device_map auto)
    with pytest.raises(models.ModelTooLarge, match=r"--max-memory allows 0 GiB \(cuda:0 0 GiB, cpu 0 GiB\): raise max_memory"):
        models.load_model(str(tmp_path), dtype="float32", device="cpu", max_memory=f"0={need // 4},cpu={need // 4}")
    # device_map auto without max_memory: every GPU plus host RAM
    monkeypatch.setattr(models, "gpu_count", lambda: 2)
    monkeypatch.setattr(models, "free_memory", lambda device: need // 4)
    with pytest.raises(models.ModelTooLarge, match=r"2 GPU\(s\) and host RAM have 0 GiB free"):
        models.load_model(str(tmp_path), dtype="float32", device_map="auto")
    assert loaded == []


def test_the_check_passes_what_fits_and_hands_max_memory_to_accelerate(tmp_path, monkeypatch, tiny_llama):
    import leaf.models as models

    tiny_llama.save_pretrained(tmp_path)
    need = 2 * sum(p.numel() for p in tiny_llama.parameters())
    models.check_fits(str(tmp_path), dtype="bfloat16", device="cpu", max_memory={"cpu": need})  # exactly enough
    monkeypatch.setattr(models, "free_memory", lambda device: None)  # unknown: not refused
    models.check_fits(str(tmp_path), dtype="float32", device="cpu")
    models.check_fits(str(tmp_path), dtype="float32", device_map={"": "cpu"})  # an explicit map is the user's call
    seen = {}

    def fake(name, **kwargs):
        seen.update(kwargs)
        return tiny_llama

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", fake)
    models.load_model(str(tmp_path), dtype="float32", device="cpu", max_memory="cpu=1GiB")
    assert seen["device_map"] == "auto" and seen["max_memory"] == {"cpu": 2**30}


def test_the_stages_pass_max_memory_and_name_their_flags(tmp_path, monkeypatch, llama_tok, tiny_llama):
    """detect, cache-teacher and distill's live teacher all refuse an oversized teacher with their own flag names."""
    import pytest

    import leaf.models as models
    from leaf.detect.config import DetectConfig
    from leaf.detect.scoring import DetectionScorer
    from leaf.config import build
    from leaf.distill import build_cache
    from leaf.distill.config import CacheConfig, DistillConfig
    from leaf.distill.run import build_trainer

    model = tmp_path / "model"  # outputs beside the model folder, never inside it (an input)
    tiny_llama.save_pretrained(model)
    llama_tok.save_pretrained(model)
    monkeypatch.setattr(models, "free_memory", lambda device: 1)
    cfg = DetectConfig(teacher=str(model), student=str(model), data=tmp_path / "d.jsonl", out=tmp_path / "o.jsonl",
                       max_memory="cpu=1KiB", dtype="float32", device="cpu")
    with pytest.raises(models.ModelTooLarge, match=r"^teacher .*allows 0 GiB \(cpu 0 GiB\): use --teacher-device-map"):
        DetectionScorer.load(cfg, {})
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": 0, "instruction": "What is 2 + 3?", "response": "5"}\n')
    cache = CacheConfig(teacher=str(model), out=tmp_path / "cache", data=data, dtype="float32", device="cpu",
                        max_memory="cpu=1KiB")
    with pytest.raises(models.ModelTooLarge, match=r"^teacher .*: use --device-map auto \(with --max-memory\)"):
        build_cache(cache)
    distill = build(DistillConfig, {"student": str(model), "teacher": str(model), "out": tmp_path / "run",
                                    "data": data, "max_memory": "cpu=1KiB", "precision": "fp32",  # the alias
                                    "alpha": 1.0})  # a fine-tune anchored to the model itself (alpha 0: refused)
    assert distill.teacher_max_memory == "cpu=1KiB"
    with pytest.raises(models.ModelTooLarge, match=r"^teacher .*: use --teacher-device-map auto \(with --max-memory\)"):
        build_trainer(distill)
