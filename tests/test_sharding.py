"""leaf.sharding in one process: the option checks, the lockstep count, the weight bytes (2-process runs:
tests/distributed/test_sharded_detect.py, tests/distill/test_cache_shards.py)."""

from __future__ import annotations

import pytest

from leaf.sharding import check_sharding, decoder_layers, is_sharded, lockstep_steps, parameter_bytes


def test_none_accepts_anything_and_fsdp_refuses_its_conflicts_naming_the_flag():
    check_sharding("none", device="cuda:3", conflicts={"--teacher-device-map": "auto"})
    check_sharding("fsdp", device="auto", conflicts={"--max-memory": None, "--gradient-checkpointing": False})
    with pytest.raises(ValueError, match="drop --teacher-device-map"):
        check_sharding("fsdp", conflicts={"--teacher-device-map": "auto"})
    with pytest.raises(ValueError, match="--device must be auto, cuda or cpu, not 'cuda:1'"):
        check_sharding("fsdp", device="cuda:1")
    with pytest.raises(ValueError, match="--shard-models must be one of none, fsdp"):
        check_sharding("zero3")


def test_one_process_needs_no_padding_and_holds_every_weight(tiny_llama):
    assert lockstep_steps(3) == 3
    assert not is_sharded(tiny_llama)
    assert parameter_bytes(tiny_llama) == sum(p.numel() * p.element_size() for p in tiny_llama.parameters())
    assert len(decoder_layers(tiny_llama)) == 2
