"""leaf.data.detections and leaf.data.counterfactuals: one reader each, exact round trips, file:line errors."""

from __future__ import annotations

import json

import pytest

from leaf.data.counterfactuals import read_counterfactuals, write_counterfactuals
from leaf.data.detections import read_detections
from leaf.data.jsonl import meta_path, write_sidecar
from leaf.data.records import DataError

TOK = {"text": " 12", "start": 9, "end": 12, "g_teacher": 0.1, "g_student": 0.9, "score": 0.0, "flag": True}
DET = {"id": "a", "level": "instruction", "method": "gradient", "tokens": [TOK], "spans": [[10, 12]],
       "loss_teacher": 1.5, "loss_student": 2.0, "truncated": 0}
RESP = {"id": "b", "key": "b@1", "level": "response", "method": "ppl",
        "tokens": [{**TOK, "field": "response", "surprisal": 3.5}], "spans": [], "response_spans": [[10, 12]],
        "segment": 1, "loss_start": 20, "loss_end": 40, "loss_teacher": 1.0, "loss_student": 1.0, "truncated": 3}
CF = {"id": "a#s0", "source_id": "a", "instruction": "Tom is, has 3.", "response": "3", "answer": "3",
      "removed": [{"field": "instruction", "start": 6, "end": 9, "text": " 12"}], "strategy": "span",
      "level": "instruction", "method": "gradient", "intervention": "delete", "loss_start": None, "verified": None}


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_records_round_trip_byte_for_byte(tmp_path):
    path = _write(tmp_path / "d.jsonl", [DET, RESP])
    dets = read_detections(path)
    assert [json.dumps(d.to_json()) for d in dets] == [json.dumps(DET), json.dumps(RESP)]
    assert dets[1].unit_key == "b@1" and dets[1].field_spans() == [("response", 10, 12)]
    cfs = read_counterfactuals(_write(tmp_path / "c.jsonl", [CF]))
    assert json.dumps(cfs[0].to_json()) == json.dumps(CF)
    write_counterfactuals(tmp_path / "out.jsonl", cfs)
    assert (tmp_path / "out.jsonl").read_text() == json.dumps(CF, ensure_ascii=False) + "\n"
    assert json.loads(meta_path(tmp_path / "out.jsonl").read_text())["schema_version"] == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"spans": [[12, 10]]}, "field 'spans': span [12, 10] is empty, inverted or negative"),
        ({"spans": [[-1, 3]]}, "field 'spans': span [-1, 3] is empty, inverted or negative"),
        ({"spans": "0-3"}, "field 'spans': must be list"),
        ({"level": "token"}, "field 'level': must be one of instruction, response"),
        ({"tokens": [{**TOK, "flag": "yes"}]}, "field 'tokens.flag': must be bool"),
        ({"tokens": [{**TOK, "start": 5, "end": 2}]}, "field 'tokens': token range [5, 2) is inverted"),
        ({"id": True}, "field 'id': must be str or int, got bool"),
    ],
)
def test_bad_detection_fields_name_file_line_and_field(tmp_path, change, message):
    path = _write(tmp_path / "d.jsonl", [DET, {**DET, "id": "z", **change}])
    with pytest.raises(DataError) as err:
        read_detections(path)
    assert f"d.jsonl:2: {message}" in str(err.value)


def test_duplicates_and_bad_counterfactuals_are_refused(tmp_path):
    with pytest.raises(DataError, match=r"d.jsonl:2: field 'id': duplicate record 'a' \(first on line 1\)"):
        read_detections(_write(tmp_path / "d.jsonl", [DET, DET]))
    with pytest.raises(DataError, match="c.jsonl:2: field 'id': duplicate id"):
        read_counterfactuals(_write(tmp_path / "c.jsonl", [CF, CF]))
    with pytest.raises(DataError, match="c.jsonl:1: field 'loss_start': 7 is outside the response"):
        read_counterfactuals(_write(tmp_path / "c.jsonl", [{**CF, "loss_start": 7}]))
    with pytest.raises(DataError, match="c.jsonl:1: field 'removed.start': must be int"):
        read_counterfactuals(_write(tmp_path / "c.jsonl", [{**CF, "removed": [{"start": "6", "end": 9, "text": "x"}]}]))


def test_a_file_of_another_schema_version_is_refused_by_name(tmp_path):
    path = _write(tmp_path / "d.jsonl", [DET])
    write_sidecar(path, "leaf.detections", 2)
    with pytest.raises(DataError, match="d.jsonl: written with a newer schema .leaf.detections version 2."):
        read_detections(path)
    write_sidecar(path, "leaf.detections", 0)
    with pytest.raises(DataError, match="an older schema"):
        read_detections(path)
    write_sidecar(path, "leaf.counterfactuals", 1)
    with pytest.raises(DataError, match="holds leaf.counterfactuals records, expected leaf.detections"):
        read_detections(path)
    write_sidecar(path, "leaf.detections", 1)
    assert read_detections(path)[0].id == "a"


RESAMPLED = {**CF, "id": "a#s0#d1", "instruction": "Tom is 7, has 3.", "intervention": "resample",
             "changes": [{"field": "instruction", "start": 7, "end": 9, "text": "12", "replacement": "7",
                          "new_start": 7, "new_end": 8}],
             "resample_from": "uniform", "draw": 1}


def test_counterfactual_schema_2_adds_resample_from_and_draw_and_still_reads_version_1(tmp_path):
    # version 2 fields round trip, in the order leaf writes them (after intervention)
    path = _write(tmp_path / "c.jsonl", [RESAMPLED])
    write_sidecar(path, "leaf.counterfactuals", 2)
    (rec,) = read_counterfactuals(path)
    assert (rec.resample_from, rec.draw) == ("uniform", 1)
    order = list(rec.to_json())
    assert order.index("intervention") + 1 == order.index("resample_from") == order.index("draw") - 1
    assert rec.to_json() == RESAMPLED
    # a version 1 file (no such fields) is read: neither field, and written back unchanged
    path1 = _write(tmp_path / "c1.jsonl", [CF])
    write_sidecar(path1, "leaf.counterfactuals", 1)
    (old,) = read_counterfactuals(path1)
    assert (old.resample_from, old.draw) == (None, None) and old.to_json() == CF
    write_sidecar(path1, "leaf.counterfactuals", 3)
    with pytest.raises(DataError, match=r"newer schema \(leaf.counterfactuals version 3\); this leaf reads versions 1 "
                                        "to 2"):
        read_counterfactuals(path1)
    write_sidecar(path1, "leaf.counterfactuals", 0)
    with pytest.raises(DataError, match="an older schema"):
        read_counterfactuals(path1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"resample_from": "oracle"}, "field 'resample_from': must be one of student, teacher, uniform, got 'oracle'"),
        ({"draw": -1}, "field 'draw': must be >= 0, got -1"),
        ({"draw": "1"}, "field 'draw': must be int, got str"),
        ({"draw": True}, "field 'draw': must be int, got bool"),
        ({"intervention": "mask"}, "field 'resample_from': only a resample record has one (intervention is 'mask')"),
    ],
)
def test_bad_resample_provenance_is_named(tmp_path, change, message):
    with pytest.raises(DataError) as err:
        read_counterfactuals(_write(tmp_path / "c.jsonl", [{**RESAMPLED, **change}]))
    assert f"c.jsonl:1: {message}" in str(err.value)
