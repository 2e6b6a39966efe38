"""Dataset references (hf:NAME[:CONFIG][@SPLIT][#TARGET=COLUMN,...]) read through datasets.load_dataset,
from local folders and files only (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leaf.data.records import DataError, load_samples, record_locations, source_bytes
from leaf.data.refs import RefError, parse_ref


def _parquet_dir(tmp_path: Path, rows: list[dict]) -> Path:
    pd = pytest.importorskip("pandas")
    folder = tmp_path / "ds"
    folder.mkdir()
    pd.DataFrame(rows).to_parquet(folder / "train.parquet")
    return folder


def _rows(n: int = 6) -> list[dict]:
    return [{"uid": f"u{i}", "problem": f"What is {i} + {i}?", "solution": f"It is {2 * i}.", "final": str(2 * i)}
            for i in range(n)]


def test_parse_forms():
    r = parse_ref("hf:AI-MO/NuminaMath-CoT:default@train[:1000]#instruction=problem,response=solution")
    assert (r.name, r.config, r.split) == ("AI-MO/NuminaMath-CoT", "default", "train[:1000]")
    assert r.fields == {"instruction": "problem", "response": "solution"}
    # huggingface_hub's URL form, also after a Path collapsed its '//'
    for text in ("hf://datasets/owner/name@test", str(Path("hf://datasets/owner/name@test"))):
        r = parse_ref(text)
        assert (r.name, r.config, r.split, r.text) == ("owner/name", None, "test", "hf:owner/name@test")
    assert parse_ref("hf:owner/name").split == "train"


@pytest.mark.parametrize("text,needle", [
    ("hf:@train", "no dataset name"),
    ("hf:x:@train", "empty CONFIG"),
    ("hf:x@", "empty SPLIT"),
    ("hf:x#instruction", "expected TARGET=COLUMN"),
    ("hf:x#question=problem", "unknown target 'question'"),
    ("hf:x#instruction=a,instruction=b", "given twice"),
])
def test_parse_errors_name_the_reference(text, needle):
    with pytest.raises(RefError, match=needle) as err:
        parse_ref(text)
    assert text in str(err.value)


def test_local_dataset_folder_with_mapping_and_slice(tmp_path):
    folder = _parquet_dir(tmp_path, _rows(6))
    ref = f"hf:{folder}@train[2:5]#id=uid,instruction=problem,response=solution,answer=final"
    samples = load_samples(ref)
    assert [s.id for s in samples] == ["u2", "u3", "u4"]
    assert samples[1].instruction == "What is 3 + 3?" and samples[1].response == "It is 6." and samples[1].answer == "6"
    assert samples[0].extra == {}  # mapped columns are renamed, not duplicated
    # a Path (what every stage's config holds) reads the same
    assert [s.id for s in load_samples(Path(ref))] == ["u2", "u3", "u4"]
    # without an id column: the row index of the split is the id
    no_id = load_samples(f"hf:{folder}@train[:2]#instruction=problem,response=solution")
    assert [s.id for s in no_id] == [0, 1]
    assert no_id[0].extra == {"uid": "u0", "final": "0"}  # unmapped columns are kept


def test_bad_row_names_dataset_row_and_field(tmp_path):
    rows = _rows(5)
    rows[3]["solution"] = "   "
    rows[1]["uid"] = "u0"
    folder = _parquet_dir(tmp_path, rows)
    ref = f"hf:{folder}@train#id=uid,instruction=problem,response=solution"
    with pytest.raises(DataError) as err:
        load_samples(ref)
    assert err.value.problems == [
        f"{ref} row 1: field 'id': duplicate id 'u0' (first on row 0)",
        f"{ref} row 3: field 'response': is empty",
    ]


def test_missing_column_and_unloadable_dataset(tmp_path):
    folder = _parquet_dir(tmp_path, _rows(2))
    with pytest.raises(DataError, match=r"column 'question' \(for instruction\) not found; columns: uid, problem"):
        load_samples(f"hf:{folder}#instruction=question,response=solution")
    with pytest.raises(DataError, match=r"hf:.*@nosuchsplit: could not load the dataset"):
        load_samples(f"hf:{folder}@nosuchsplit")


def test_jsonl_file_reference_and_locations(tmp_path):
    path = tmp_path / "raw.jsonl"
    path.write_text("".join(json.dumps({"q": f"Q{i}?", "a": f"A{i}.", "key": f"k{i}"}) + "\n" for i in range(4)))
    ref = f"hf:{path}@train[1:]#id=key,instruction=q,response=a"
    samples = load_samples(ref)
    assert [(s.id, s.instruction) for s in samples] == [("k1", "Q1?"), ("k2", "Q2?"), ("k3", "Q3?")]
    assert record_locations(ref) == {"k1": f"{ref} row 0", "k2": f"{ref} row 1", "k3": f"{ref} row 2"}
    # the content identity (resume and cache checks) changes with the data, not only with the reference
    before = source_bytes(ref)
    path.write_text(path.read_text().replace("Q2?", "Q2 changed?"))
    assert source_bytes(ref) != before


def test_evaluate_and_analyze_read_references(tmp_path):
    from leaf.analyze.spans import load_span_samples
    from leaf.data.benchmarks import load_benchmark

    rows = [{"problem": f"Add {i} and {i}.", "solution": f"\\boxed{{{2 * i}}}", "final": str(2 * i),
             "meta": {"confounder_spans": [[0, 3]]}} for i in range(3)]
    folder = _parquet_dir(tmp_path, rows)
    ref = f"hf:{folder}@train[:2]#instruction=problem,response=solution,answer=final"
    name, task, samples = load_benchmark(ref, task="math")
    assert (name, task, [s.answer for s in samples]) == ("ds", "math", ["0", "2"])
    with pytest.raises(DataError, match="needs --task"):
        load_benchmark(ref)
    kind, spans = load_span_samples(ref)
    assert kind == "samples" and len(spans) == 2
