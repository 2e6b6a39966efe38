"""``leaf detect --shard-models fsdp`` on 2 CPU processes (gloo): teacher and student sharded by torch's FSDP2
give the detections of 1 process, with an uneven number of batches per process (padding batches), resume
an interrupted part, and a run with another number of processes is refused as without sharding."""

from __future__ import annotations

import json
import shutil

import pytest

from leaf.data.jsonl import meta_path
from leaf.detect import detect
from leaf.distributed import ShardMismatch, existing_parts, part_path
from leaf.tiny import DEFAULT_CORPUS, build_model, build_tokenizer

from .launch import launch
from .test_two_processes import _same_detections

N = 10  # 5 batches of 2: rank 0 scores 3, rank 1 scores 2 and one padding batch


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    tok = build_tokenizer(style="llama3")
    # an untied teacher and a tied student: the head is the embedding's weight, gathered by the root unit
    for name, hidden, layers, seed, tied in (("teacher", 32, 2, 0, False), ("student", 16, 2, 1, True)):
        build_model(tok, hidden_size=hidden, num_layers=layers, seed=seed, tie_word_embeddings=tied).save_pretrained(
            root / name)
        tok.save_pretrained(root / name)
    with (root / "d.jsonl").open("w") as fh:
        for i in range(N):
            fh.write(json.dumps({"id": i, "instruction": DEFAULT_CORPUS[i % 7][: 15 + 9 * ((i * 5) % N)],
                                 "response": DEFAULT_CORPUS[(i + 1) % 7][: 20 + 3 * i]}) + "\n")
    return root


def _kwargs(setup):
    return dict(teacher=str(setup / "teacher"), student=str(setup / "student"), data=setup / "d.jsonl",
                batch_size=2, progress=False)


def _args(setup, out):
    return ["-v", "detect", "--teacher", str(setup / "teacher"), "--student", str(setup / "student"), "--data",
            str(setup / "d.jsonl"), "--batch-size", "2", "--shard-models", "fsdp", "--out", str(out)]


@pytest.fixture(scope="module")
def one(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "det.jsonl"
    detect(out=out, **_kwargs(setup))
    return out


def _sharded(proc):
    """Both processes loaded both models sharded (the per-process log line of the sharded load)."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("teacher sharded (FSDP2)") == 2, proc.stderr[-3000:]
    assert proc.stderr.count("student sharded (FSDP2)") == 2, proc.stderr[-3000:]


@pytest.mark.parametrize("extra", [[], ["--gradient-checkpointing"], ["--packing", "on"]],
                         ids=["plain", "checkpointed", "packed"])
def test_sharded_detect_equals_one_process(setup, one, tmp_path, extra):
    """Checkpointed layers are recomputed in backward from weights FSDP2 gathers again: the same numbers. Packed
    rows (each process packs its own batches, padding batches too) give the packed one-process run's numbers
    (packed against padded: tests/detect/test_run.py)."""
    out = tmp_path / "det.jsonl"
    proc = launch(_args(setup, out) + extra)
    _sharded(proc)
    if "--packing" in extra:
        one = tmp_path / "one-packed.jsonl"
        detect(out=one, packing="on", **_kwargs(setup))
    _same_detections(one, out)  # saliency within 1e-5, every flag and span identical, same order and sidecar
    assert existing_parts(out) == {}
    assert f"{N} samples: {N} written, 0 already done" in proc.stdout


def test_sharded_detect_resumes_a_part_and_refuses_another_world(setup, one, tmp_path):
    from .test_two_processes import _shards_of

    out = tmp_path / "det.jsonl"
    lines = {str(json.loads(line)["id"]): line for line in one.read_text().splitlines(keepends=True)}
    rank0, rank1 = _shards_of(setup)
    assert (len(rank0), len(rank1)) == (6, 4)
    # rank 0 killed after its first batch and in the middle of a line; rank 1 done: only rank 0 has work left,
    # so rank 1 runs padding batches the whole time
    part0, part1 = part_path(out, 0, 2), part_path(out, 1, 2)
    part0.write_text(lines[rank0[0]] + lines[rank0[1]] + lines[rank0[2]][:25])
    part1.write_text("".join(lines[k] for k in rank1))
    for p in (part0, part1):
        shutil.copy(meta_path(one), meta_path(p))
    with pytest.raises(ShardMismatch, match="2-process run"):  # another world size is refused, as unsharded
        detect(out=out, shard_models="fsdp", **_kwargs(setup))
    proc = launch(_args(setup, out))
    _sharded(proc)
    assert f"{N} samples: 4 written, 6 already done" in proc.stdout
    _same_detections(one, out)
    assert existing_parts(out) == {}


@pytest.mark.parametrize("bad, flag", [
    (dict(teacher_device_map="auto"), "--teacher-device-map"),
    (dict(max_memory="0=10GiB"), "--max-memory"),
    (dict(teacher_device="cpu"), "--teacher-device"),
])
def test_sharding_refuses_its_own_placement_flags(setup, tmp_path, bad, flag):
    with pytest.raises(ValueError, match=flag):
        detect(out=tmp_path / "x.jsonl", shard_models="fsdp", **{**_kwargs(setup), **bad})


def test_a_teacher_that_does_not_load_stops_every_process_with_one_line(setup, tmp_path):
    """Process 0 alone reads the weights (the others build the model empty and receive their shares): when its
    load fails, every process stops with the same line instead of waiting for weights that never come."""
    bad = tmp_path / "teacher"
    shutil.copytree(setup / "teacher", bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    args = _args(setup, tmp_path / "det.jsonl")
    args[args.index("--teacher") + 1] = str(bad)
    proc = launch(args, timeout=120)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "leaf detect: error:" in line]
    assert len(errors) == 2, proc.stderr[-3000:]  # each process: one line, no traceback of its own
    assert all(str(bad) in line and "cannot load the model" in line for line in errors)
    assert sum("process 0 could not load the teacher" in line for line in errors) == 1
    assert "[rank0]: Traceback" not in proc.stderr and "[rank1]: Traceback" not in proc.stderr
