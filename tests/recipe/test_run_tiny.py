"""``leaf run configs/recipes/tiny.yaml`` end to end on the tiny models: run, no-op, crash + resume, refuse, --from."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from leaf.cli import main
from leaf.tiny import write_tiny

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "recipes" / "tiny.yaml"
STAGES = ["convert", "label", "detect", "prune", "distill", "distill_kd", "eval_before", "eval_leaf", "eval_kd",
          "analyze", "report"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    write_tiny(out=root / "models")
    return root


def leaf_run(tiny: Path, run: Path, *extra: str) -> int:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)  # the recipe names examples/tiny.jsonl relative to the repository
        return main(["run", str(RECIPE), "--set", f"run={run}", f"teacher={tiny / 'models' / 'teacher'}",
                     f"student={tiny / 'models' / 'student'}", *extra])


@pytest.fixture(scope="module")
def full(tiny):
    run = tiny / "full"
    t0 = time.perf_counter()
    assert leaf_run(tiny, run) == 0
    return run, time.perf_counter() - t0


def test_tiny_recipe_runs_end_to_end_then_is_a_no_op(full, tiny, capsys):
    run, seconds = full
    for name in STAGES:
        marker = json.loads((run / "stages" / f"{name}.json").read_text())
        assert marker["stage"] == name and Path(marker["output"]).exists()
        assert (run / "stages" / f"{name}.yaml").is_file()
    assert (run / "report" / "report.html").stat().st_size > 10_000
    assert sorted(p.name for p in (run / "report" / "eval").glob("*.json")) == ["distill.json", "distill_kd.json",
                                                                                  "student.json"]
    assert (run / "report" / "train-distill" / "metrics.jsonl").is_file()
    kd = json.loads((run / "distill_kd" / "leaf_config.json").read_text())
    assert kd["lam"] == 1.0 and kd["counterfactuals"] is None
    capsys.readouterr()
    t0 = time.perf_counter()
    assert leaf_run(tiny, run) == 0
    again = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert out.count(": skipped (finished with these settings") == len(STAGES)
    assert "| student" in out and "| distill_kd" in out and f"report: {run}/report/report.html" in out
    assert again < 10, f"a no-op rerun took {again:.1f} s (the first run {seconds:.1f} s)"


def test_a_stage_killed_midway_resumes_to_the_same_output(full, tiny, capsys):
    run, _ = full
    crashed = tiny / "crashed"
    assert leaf_run(tiny, crashed, "--until", "detect") == 0
    assert not (crashed / "stages" / "prune.json").exists()
    # what a crash in the middle of detect leaves: no done marker, the last record half written
    (crashed / "stages" / "detect.json").unlink()
    det = crashed / "detect" / "detections.jsonl"
    lines = det.read_text().splitlines(keepends=True)
    det.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    capsys.readouterr()
    assert leaf_run(tiny, crashed, "--until", "prune") == 0
    out = capsys.readouterr().out
    assert "detect (detect): resuming" in out and "label: skipped" in out
    assert det.read_text() == (run / "detect" / "detections.jsonl").read_text()
    assert (crashed / "prune" / "counterfactuals.jsonl").read_text() == \
        (run / "prune" / "counterfactuals.jsonl").read_text()


def test_an_interrupted_stage_whose_input_was_made_again_starts_over(full, tiny, capsys, monkeypatch):
    """A stage interrupted on old inputs does not resume its stale partial output once they are made again."""
    import leaf.detect

    run, _ = full
    folder = tiny / "restarted"
    assert leaf_run(tiny, folder, "--until", "label") == 0
    real = leaf.detect.detect

    def interrupted(cfg):
        Path(cfg.out).write_text('{"stale": true}\n')  # a partial output made from the first labels
        raise KeyboardInterrupt

    monkeypatch.setattr(leaf.detect, "detect", interrupted)
    assert leaf_run(tiny, folder, "--until", "detect") == 130  # interrupted
    started = folder / "stages" / "detect.started.json"
    assert started.is_file() and not (folder / "stages" / "detect.json").exists()
    monkeypatch.setattr(leaf.detect, "detect", real)
    assert leaf_run(tiny, folder, "--from", "label", "--until", "label") == 0  # its input, made again
    capsys.readouterr()
    assert leaf_run(tiny, folder, "--until", "detect") == 0
    out = capsys.readouterr().out
    assert "detect: label finished again since this stage was interrupted: starting it over" in out
    assert "detect (detect): start" in out
    assert (folder / "detect" / "detections.jsonl").read_text() == (run / "detect" / "detections.jsonl").read_text()
    assert not started.exists()


def test_an_option_added_since_a_stage_finished_counts_at_its_default_only(full, tiny, capsys):
    """A marker written before an option existed: the option at its default changes nothing; set, it is refused."""
    run, _ = full
    older = tiny / "older"
    shutil.copytree(run, older, symlinks=True)
    path = older / "stages" / "detect.json"
    marker = json.loads(path.read_text())
    assert marker["config"].pop("special_tokens_in_text") == "warn"  # as if written before the option existed
    path.write_text(json.dumps(marker))
    capsys.readouterr()
    assert leaf_run(tiny, older, "--until", "detect") == 0
    assert "detect: skipped (finished with these settings" in capsys.readouterr().out
    assert leaf_run(tiny, older, "--until", "detect", "--set", "detect.special_tokens_in_text=escape") == 2
    assert "special_tokens_in_text (null -> \"escape\")" in capsys.readouterr().err


def test_a_changed_setting_of_a_finished_stage_is_refused(full, tiny, capsys):
    run, _ = full
    before = (run / "stages" / "detect.json").read_text()
    assert leaf_run(tiny, run, "--set", "detect.tau=0.3") == 2
    err = capsys.readouterr().err
    assert "stage 'detect'" in err and "tau (0.1 -> 0.3)" in err and "--from detect" in err
    assert (run / "stages" / "detect.json").read_text() == before  # nothing ran


def test_from_redoes_a_stage_and_what_follows(full, tiny, capsys):
    run, _ = full
    copy = tiny / "copy"
    shutil.copytree(run, copy, symlinks=True)  # markers record run paths as {run}/...: the copy is a finished run
    assert leaf_run(tiny, copy, "--until", "prune") == 0
    assert capsys.readouterr().out.count(": skipped (") == 4
    assert leaf_run(tiny, copy, "--set", "detect.tau=0.3", "--from", "detect", "--until", "prune") == 0
    out = capsys.readouterr().out
    assert "detect (detect): start" in out and "prune (prune): start" in out and "label: skipped" not in out
    assert json.loads((copy / "stages" / "detect.json").read_text())["config"]["tau"] == 0.3
    # distill finished on the old counterfactuals: refused until it is redone too
    assert leaf_run(tiny, copy, "--set", "detect.tau=0.3") == 2
    err = capsys.readouterr().err
    assert "stage 'distill'" in err and "'prune'" in err and "--from distill" in err
    assert leaf_run(tiny, copy, "--set", "detect.tau=0.3", "--from", "distill") == 0
    assert leaf_run(tiny, copy, "--set", "detect.tau=0.3") == 0
    assert capsys.readouterr().out.count(": skipped (") == len(STAGES)


def test_only_needs_finished_inputs(tiny, capsys):
    assert leaf_run(tiny, tiny / "empty", "--only", "prune") == 2
    assert "reads the output of 'detect', which has not finished" in capsys.readouterr().err
