"""2 CPU processes (gloo) give the same ``leaf detect`` and ``leaf label`` outputs as 1 process; parts resume."""

from __future__ import annotations

import json
import shutil

import pytest

from leaf.data.jsonl import meta_path, read_jsonl
from leaf.detect import detect
from leaf.distributed import ShardMismatch, existing_parts, part_path
from leaf.tiny import DEFAULT_CORPUS, build_model, build_tokenizer

from .launch import launch

N = 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("two")
    tok = build_tokenizer(style="llama3")
    for name, hidden, layers, seed in (("teacher", 32, 2, 0), ("student", 16, 1, 1)):
        build_model(tok, hidden_size=hidden, num_layers=layers, seed=seed).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    with (root / "d.jsonl").open("w") as fh:
        for i in range(N):  # lengths spread, so batches by length differ from input order
            fh.write(json.dumps({
                "id": i, "instruction": DEFAULT_CORPUS[i % 7][: 15 + 9 * ((i * 5) % N)],
                "response": DEFAULT_CORPUS[(i + 1) % 7][: 20 + 3 * i], "answer": "x",
                "teacher_correct": True, "student_correct": False,
            }) + "\n")
    return root


def _detect_args(setup, out):
    return ["detect", "--teacher", str(setup / "teacher"), "--student", str(setup / "student"),
            "--data", str(setup / "d.jsonl"), "--batch-size", "2", "--out", str(out)]


@pytest.fixture(scope="module")
def one(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "det.jsonl"
    detect(teacher=str(setup / "teacher"), student=str(setup / "student"), data=setup / "d.jsonl", out=out,
           batch_size=2, progress=False)
    return out


def _same_detections(a, b):
    ra, rb = read_jsonl(a), read_jsonl(b)
    assert [r["id"] for r in ra] == [r["id"] for r in rb]  # same records, in the same order
    for x, y in zip(ra, rb):
        for k in x:
            if k != "tokens":
                assert x[k] == y[k], k
        assert len(x["tokens"]) == len(y["tokens"])
        for s, t in zip(x["tokens"], y["tokens"]):
            assert {k: v for k, v in s.items() if not isinstance(v, float)} == \
                   {k: v for k, v in t.items() if not isinstance(v, float)}
            for k, v in s.items():
                if isinstance(v, float):
                    assert t[k] == pytest.approx(v, rel=1e-5, abs=1e-12), k
    assert json.loads(meta_path(a).read_text()) == json.loads(meta_path(b).read_text())


def test_detect_two_processes_equal_one(setup, one, tmp_path):
    out = tmp_path / "det.jsonl"
    proc = launch(_detect_args(setup, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    _same_detections(one, out)
    assert existing_parts(out) == {}
    assert f"{N} samples: {N} written, 0 already done" in proc.stdout
    # merged: a rerun with another number of processes (here 1) is a no-op
    s = detect(teacher=str(setup / "teacher"), student=str(setup / "student"), data=setup / "d.jsonl", out=out,
               batch_size=2, progress=False)
    assert (s.written, s.resumed) == (0, N)


def _shards_of(setup):
    """The keys of rank 0 and rank 1 of a 2-process run (the batches a single process forms)."""
    from leaf.batching import length_batches
    from leaf.data.records import load_samples, select_samples
    from leaf.detect.config import DetectConfig
    from leaf.detect.run import units
    from leaf.models import load_tokenizer

    cfg = DetectConfig(teacher=str(setup / "teacher"), student=str(setup / "student"), data=setup / "d.jsonl",
                       out=setup / "unused.jsonl", batch_size=2)
    toks = {"teacher": load_tokenizer(cfg.teacher), "student": load_tokenizer(cfg.student)}
    prepared = [p for s in select_samples(load_samples(cfg.data), cfg.select) for p in units(s, toks, cfg)]
    batches = length_batches([max(len(v.input_ids) for v in p.views.values()) for p in prepared], 2)
    return [[str(prepared[i].key) for b in batches[r::2] for i in b] for r in (0, 1)]


def test_detect_resumes_each_part_and_refuses_another_world(setup, one, tmp_path):
    out = tmp_path / "det.jsonl"
    lines = {str(json.loads(line)["id"]): line for line in one.read_text().splitlines(keepends=True)}
    rank0, rank1 = _shards_of(setup)
    assert len(rank0) == len(rank1) == N // 2
    # rank 0's part complete, rank 1's half written (killed in the middle of a line)
    part0, part1 = part_path(out, 0, 2), part_path(out, 1, 2)
    part0.write_text("".join(lines[k] for k in rank0))
    part1.write_text("".join(lines[k] for k in rank1[:3]) + lines[rank1[3]][:25])
    for p in (part0, part1):
        shutil.copy(meta_path(one), meta_path(p))
    with pytest.raises(ShardMismatch, match="2-process run"):  # another world size is refused
        detect(teacher=str(setup / "teacher"), student=str(setup / "student"), data=setup / "d.jsonl", out=out,
               batch_size=2, progress=False)
    proc = launch(_detect_args(setup, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{N} samples: 3 written, 9 already done" in proc.stdout
    _same_detections(one, out)
    assert existing_parts(out) == {}


def test_label_two_processes_equal_one(setup, tmp_path):
    from leaf.evaluate.label import label

    args = dict(teacher=str(setup / "teacher"), student=str(setup / "student"), data=setup / "d.jsonl",
                task="exact", max_new_tokens=5, batch_size=2)
    label(out=tmp_path / "one" / "l.jsonl", **args)
    out = tmp_path / "two" / "l.jsonl"
    proc = launch(["label", "--teacher", args["teacher"], "--student", args["student"], "--data", str(args["data"]),
                   "--task", "exact", "--max-new-tokens", "5", "--batch-size", "2", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rel in ("l.jsonl", "l.jsonl.generations/teacher.jsonl", "l.jsonl.generations/student.jsonl"):
        a, b = tmp_path / "one" / rel, tmp_path / "two" / rel
        assert a.read_text() == b.read_text(), rel  # greedy: the same text, in the same order
        assert meta_path(a).read_text() == meta_path(b).read_text()
    assert sorted(p.name for p in (tmp_path / "two" / "l.jsonl.generations").iterdir()) == \
        ["student.jsonl", "student.jsonl.meta.json", "teacher.jsonl", "teacher.jsonl.meta.json"]
