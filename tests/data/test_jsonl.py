"""leaf.data.jsonl: lines that are not text, resuming a damaged file, and --overwrite that never loses the old output."""

from __future__ import annotations

import json

import pytest

from leaf.data.jsonl import ResumableJsonl, SettingsMismatch, iter_jsonl, meta_path
from leaf.data.records import DataError, load_samples


def test_lines_that_are_not_text_are_errors_not_crashes(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"id": 1, "instruction": "q", "response": "a"}\n'
                     b'{"id": 2, "instruction": "\xff\xfe", "response": "a"}\n'
                     b'{"id": 3, "instruction": "\\ud800", "response": "a"}\n')
    got = list(iter_jsonl(path))
    assert got[0][2] is None and got[0][1]["id"] == 1
    assert got[1][2].startswith("not valid UTF-8") and got[2][2].startswith("a string holds a lone surrogate")
    with pytest.raises(DataError) as err:
        load_samples(path)
    assert "in.jsonl:2: not valid UTF-8" in str(err.value) and "in.jsonl:3: a string holds a lone surrogate" in str(err.value)


def test_resuming_a_file_with_a_garbage_line_names_it(tmp_path):
    out = tmp_path / "out.jsonl"
    w = ResumableJsonl(out, {"a": 1})
    w.write_batch([{"id": 1}])
    with out.open("a") as fh:
        fh.write("garbage\n")
    with pytest.raises(DataError, match=r"out.jsonl:2: not a record this command wrote"):
        ResumableJsonl(out, {"a": 1})


def test_overwrite_keeps_the_old_output_until_the_new_run_completes(tmp_path):
    out = tmp_path / "out.jsonl"
    old = ResumableJsonl(out, {"a": 1})
    old.write_batch([{"id": 1, "v": "old"}])
    before = out.read_bytes()
    with pytest.raises(SettingsMismatch):
        ResumableJsonl(out, {"a": 2})
    new = ResumableJsonl(out, {"a": 2}, overwrite=True)
    new.write_batch([{"id": 1, "v": "new"}])
    assert out.read_bytes() == before  # a kill now would leave the old output whole
    assert json.loads(meta_path(out).read_text())["settings"] == {"a": 1}
    # an interrupted overwrite is simply restarted by the next one
    again = ResumableJsonl(out, {"a": 2}, overwrite=True)
    assert again.done == set()
    again.write_batch([{"id": 1, "v": "new"}, {"id": 2, "v": "new"}])
    assert again.commit() == out
    assert [json.loads(x)["v"] for x in out.read_text().splitlines()] == ["new", "new"]
    assert json.loads(meta_path(out).read_text())["settings"] == {"a": 2}
    assert not (tmp_path / "out.jsonl.new").exists()
    assert ResumableJsonl(out, {"a": 2}).done == {"1", "2"}  # and it resumes as usual
