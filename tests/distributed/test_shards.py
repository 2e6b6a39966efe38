"""leaf.distributed: the batch split, part names, refusal of another world size, merging in a given order."""

from __future__ import annotations

import json

import pytest

from leaf.data.jsonl import ResumableJsonl, meta_path, read_jsonl
from leaf.distributed import (
    ShardMismatch, check_parts, done_keys, existing_parts, merge_parts, part_path, rank_and_world, shard,
)


def test_single_process_without_launcher():
    assert rank_and_world() == (0, 1)


def test_shard_gives_batch_k_to_rank_k_mod_world():
    batches = [[0, 1], [2, 3], [4], [5, 6], [7]]
    assert shard(batches, 0, 2) == [[0, 1], [4], [7]]
    assert shard(batches, 1, 2) == [[2, 3], [5, 6]]
    assert sorted(i for r in range(3) for b in shard(batches, r, 3) for i in b) == list(range(8))
    with pytest.raises(ValueError):
        shard(batches, 2, 2)


def test_part_names_and_other_world_refused(tmp_path):
    out = tmp_path / "det.jsonl"
    assert part_path(out, 1, 2).name == "det.jsonl.part-00001-of-00002"
    ResumableJsonl(part_path(out, 0, 3), {"a": 1}).write_batch([{"id": 1}])
    (tmp_path / "det.jsonl.part-00000-of-00003.new").write_text("")
    (tmp_path / "det.jsonl.other").write_text("")
    assert set(existing_parts(out)) == {3} and len(existing_parts(out)[3]) == 3
    check_parts(out, 3)  # the same world size resumes
    with pytest.raises(ShardMismatch, match="3-process run.*rerun with 3 processes"):
        check_parts(out, 2)
    check_parts(out, 2, overwrite=True)


def test_merge_orders_records_and_removes_parts(tmp_path):
    out = tmp_path / "o.jsonl"
    settings = {"model": "m"}
    old = ResumableJsonl(out, settings)
    old.write_batch([{"id": "z", "v": 0}])  # an earlier (resumed) record not in the order
    for rank, recs in ((0, [{"id": "b"}, {"id": "d"}]), (1, [{"id": "a"}, {"id": "c", "x": "é"}])):
        ResumableJsonl(part_path(out, rank, 2), settings).write_batch(recs)
    with part_path(out, 1, 2).open("a") as fh:
        fh.write('{"id": "half')  # a half-written line is not merged
    assert done_keys(out, settings) == {"z"}
    with pytest.raises(ValueError, match="other settings"):
        done_keys(out, {"model": "other"})
    merge_parts(out, 2, settings, order=["a", "b", "c", "d"], schema="x", schema_version=1)
    assert [r["id"] for r in read_jsonl(out)] == ["a", "b", "c", "d", "z"]
    assert json.loads(meta_path(out).read_text()) == {"settings": settings, "schema": "x", "schema_version": 1}
    assert existing_parts(out) == {}
