"""Shipped recipes: each loads and passes --dry-run; the paper's are exactly the paper's setup; estimates by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from leaf.cli import main
from leaf.config import ConfigError, build, load_yaml
from leaf.estimate import GB
from leaf.recipe import RecipeConfig, load_recipe, run_recipe
from leaf.recipe.estimate import estimate_plan
from leaf.recipe.runner import resolve_plan

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "configs" / "recipes").glob("*.yaml"))
PAPER = {
    "llama3_2_1b_from_llama3_3_70b.yaml": ("meta-llama/Llama-3.3-70B-Instruct", "meta-llama/Llama-3.2-1B-Instruct",
                                           0.10, 0.15),
    "llama3_2_3b_from_llama3_3_70b.yaml": ("meta-llama/Llama-3.3-70B-Instruct", "meta-llama/Llama-3.2-3B-Instruct",
                                           0.05, 0.10),
    "qwen2_5_math_1_5b_from_qwen2_5_72b.yaml": ("Qwen/Qwen2.5-72B-Instruct", "Qwen/Qwen2.5-Math-1.5B-Instruct",
                                                0.10, 0.15),
}
SUITES = ["gsm8k", "math500", "olympiadbench", "humaneval-plus", "leetcode", "livecodebench"]


def test_the_paper_recipes_and_tiny_are_shipped():
    assert {p.name for p in RECIPES} >= {*PAPER, "tiny.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads_and_dry_runs(path, tmp_path, capsys):
    assert main(["run", str(path), "--dry-run", "--set", f"run={tmp_path / 'run'}"]) == 0
    out = capsys.readouterr().out
    assert "dry run of" in out and "nothing is loaded or written" in out
    assert not (tmp_path / "run").exists()  # a dry run writes nothing
    assert main(["run", str(path), "--print", "--set", f"run={tmp_path / 'run'}"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert list(resolved["stages"]) == load_recipe(path)["stages"]


def _stages(path: Path) -> dict:
    plan = resolve_plan(build(RecipeConfig, {"recipe": path}))
    return {s.name: (s, plan.configs[s.name]) for s in plan.steps}, plan


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_recipes_are_the_papers_setup(name):
    teacher, student, tau_instr, tau_resp = PAPER[name]
    stages, plan = _stages(ROOT / "configs" / "recipes" / name)
    kinds = [s.kind.name for s, _ in stages.values()]
    assert {"convert", "label", "detect", "prune", "distill", "evaluate", "analyze", "report"} <= set(kinds)
    datasets = sorted(c.dataset for s, c in stages.values() if s.kind.name == "convert")
    assert datasets == ["acecode-87k", "numinamath-cot"]
    distills = {n: c for n, (s, c) in stages.items() if s.kind.name == "distill"}
    assert set(distills) == {"distill", "distill_resp", "distill_kd"}
    for n, c in distills.items():
        assert (c.teacher, c.student) == (teacher, student)
        assert c.learning_rate == 1e-5 and c.lr_scheduler == "cosine" and c.warmup_steps == 5
        assert c.epochs == 3 and c.max_steps == -1
        assert c.batch_size * c.grad_accum * plan.gpus == 32 and plan.gpus == 8
        assert c.max_length == 4096 and c.precision == "bf16" and c.teacher_dtype == "bfloat16"
        assert c.temperature == 1.0 and c.alpha == 0.0 and c.lora_r == 0  # full-parameter logit distillation
        assert c.data is not None
    assert distills["distill"].lam == distills["distill_resp"].lam == 0.5
    assert distills["distill_kd"].lam == 1.0 and distills["distill_kd"].counterfactuals is None  # KD w/o mask
    assert "prune_math_resp" in str(distills["distill_resp"].counterfactuals) or \
        stages["distill_resp"][0].merges["counterfactuals"][-2:] == [
            str(stages["prune_math_resp"][0].output), str(stages["prune_code_resp"][0].output)]
    assert stages["distill"][0].merges["counterfactuals"] == [
        str(stages["prune_math"][0].output), str(stages["prune_code"][0].output)]
    detects = {n: c for n, (s, c) in stages.items() if s.kind.name == "detect"}
    assert len(detects) == 4
    for c in detects.values():
        assert c.method == "gradient" and c.select == "student-wrong" and c.max_length == 4096
        assert c.tau == (tau_instr if c.level == "instruction" else tau_resp)
        assert c.level == "instruction" or c.segments == 2
    for s, c in stages.values():
        if s.kind.name == "prune":
            assert (c.strategy, c.intervention) == ("span", "delete")  # span pruning, the paper's
        if s.kind.name == "label":
            assert c.task == ("math" if "math" in s.name else "code")
    evals = {n: c for n, (s, c) in stages.items() if s.kind.name == "evaluate"}
    assert {c.name for c in evals.values()} == {"student", "distill", "distill_resp", "distill_kd"}
    for c in evals.values():
        assert c.benchmark == SUITES
    assert evals["eval_before"].model == student


def test_the_70b_teacher_estimates_match_hand_arithmetic():
    path = ROOT / "configs" / "recipes" / "llama3_2_1b_from_llama3_3_70b.yaml"
    plan = resolve_plan(build(RecipeConfig, {"recipe": path}))
    est = {e.name: e for e in estimate_plan(plan)}
    # LLaMA-3.3-70B: embedding + head 2 x 128,256 x 8192, 80 layers of 855.65M, final norm 8192.
    layer = 8192 * 8192 * 2 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192
    n_teacher = 2 * 128256 * 8192 + 80 * layer + 8192
    assert n_teacher == 70_553_706_496
    det = est["detect_math"].numbers
    assert det["teacher_params"] == n_teacher
    assert det["teacher_weights"] == 2 * n_teacher and round(det["teacher_weights"] / GB, 1) == 141.1  # bf16
    n_student = 1_235_814_400
    assert det["student_params"] == n_student
    tokens = 1000 * 512  # per 1,000 samples of 512 tokens (hub data: assumed, docs/scaling.md)
    assert det["flops"] == 6 * n_teacher * tokens + 6 * n_student * tokens  # gradient checkpointing: 6 N T
    assert det["seconds"] == pytest.approx(det["flops"] / (989e12 * 0.4))  # one GPU computes (pipeline)
    assert round(det["seconds"]) == 557  # docs/scaling.md: detect, 1B, --gradient-checkpointing
    kd = est["distill_kd"].numbers
    assert kd["effective_batch"] == 32
    assert kd["flops"] == (2 * n_teacher + 8 * n_student) * 3 * 2000 * 512  # 2 x 1,000 originals, 3 epochs
    assert kd["seconds"] == pytest.approx(kd["flops"] / (8 * 989e12 * 0.4))
    # ZeRO-3 per GPU: states 16 N / 8 + teacher 141.1 GB / 8 + 3 gathered layers + activations + logits + 3 GB
    assert 25 * GB < kd["memory_per_gpu"] < 35 * GB
    assert est["label_math"].fits is False  # leaf label: the 70B teacher on one 80 GB device does not fit
    assert est["detect_math"].fits and est["distill"].fits


def test_print_commands_write_stage_configs(tmp_path, capsys):
    path = ROOT / "configs" / "recipes" / "llama3_2_1b_from_llama3_3_70b.yaml"
    run = tmp_path / "run"
    assert main(["run", str(path), "--print-commands", "--set", f"run={run}"]) == 0
    out = capsys.readouterr().out
    assert (f"accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml --num_processes 8 -m leaf "
            f"distill --config {run}/stages/distill.yaml") in out
    assert f"leaf detect --config {run}/stages/detect_math.yaml" in out
    assert f"leaf data convert --config {run}/stages/convert_math.yaml" in out
    from leaf.detect.config import DetectConfig
    from leaf.distill.config import DistillConfig

    det = build(DetectConfig, load_yaml(run / "stages" / "detect_math.yaml", DetectConfig))
    assert det.tau == 0.10 and str(det.out) == f"{run}/detect_math/detections.jsonl"
    dis = build(DistillConfig, load_yaml(run / "stages" / "distill.yaml", DistillConfig))
    assert str(dis.data) == f"{run}/inputs/distill.data.jsonl" and dis.lam == 0.5


@pytest.mark.parametrize("bad, words", [
    ({"detect": {"out": "x.jsonl"}}, ["detect", "'out'", "path between stages"]),
    ({"prune": {"detections": "d.jsonl"}}, ["prune", "'detections'"]),
    ({"distill": {"output_dir": "o"}}, ["distill", "'out'"]),
    ({"detect": {"taux": 1}}, ["detect", "unknown option 'taux'"]),
    ({"nonsense": 3}, ["shared key 'nonsense'"]),
    ({"extra": {"stage": "detect"}}, ["'extra' is not in `stages:`"]),
])
def test_a_recipe_setting_a_path_or_unknown_key_is_refused(tmp_path, bad, words):
    base = {"run": str(tmp_path / "r"), "teacher": "t", "student": "s", "task": "exact",
            "stages": ["convert", "label", "detect", "prune", "distill"], "convert": {"dataset": "x.jsonl"}}
    for k, v in bad.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(base))
    with pytest.raises(ConfigError) as err:
        run_recipe(recipe=recipe, print_recipe=True)
    for w in words:
        assert w in str(err.value)


def test_docs_recipes_lists_the_options_of_leaf_run():
    from leaf.config import options_markdown

    text = (ROOT / "docs" / "recipes.md").read_text()
    assert options_markdown(RecipeConfig) in text
    for path in RECIPES:
        assert path.name in text
