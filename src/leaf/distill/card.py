"""The model card (``README.md``) of a distillation run, and ``--push-to-hub``.

:func:`write_card` builds the card from what the run recorded, never from
what was merely asked for: ``leaf_config.json`` (the settings and the
``_run`` counts: examples, lambda used, effective batch, precision),
``trainer_state.json`` (steps, epochs, every evaluation), the counterfactual
records and their sidecar (detection and pruning settings), and the
``leaf evaluate`` results files given with ``--card-results``. The front
matter is written by huggingface_hub's :class:`~huggingface_hub.ModelCardData`.

:func:`push_to_hub` uploads the output folder with huggingface_hub's own
``HfApi.create_repo`` + ``HfApi.upload_folder`` (checkpoints stay local).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from leaf.config import ConfigError
from leaf.data.records import DataError
from leaf.distill.config import CONFIG_FILE, DistillConfig, public_settings

log = logging.getLogger(__name__)

CARD_FILE = "README.md"
#: The first line of a card's body: a README.md without it was not written by leaf and is never replaced.
MARKER = "<!-- model card written by `leaf distill` -->"
#: What --push-to-hub leaves out of the upload (fnmatch patterns on paths relative to the output folder).
PUSH_IGNORE = ["checkpoint-*", "_*", ".*"]
#: The tags every card carries.
TAGS = ["leaf", "distillation", "knowledge-distillation", "causal-attention-distillation"]


def _is_local(name: str | None) -> bool:
    return name is not None and Path(str(name)).expanduser().exists()


def _hub_dataset(source: Any) -> str | None:
    """The Hub dataset id of a ``hf:`` reference (None for a file or a local dataset)."""
    from leaf.data.refs import is_ref, parse_ref

    if source is None or not is_ref(source):
        return None
    name = parse_ref(source).name
    return None if _is_local(name) else name


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _results(paths: list[Path]) -> list[dict[str, Any]]:
    """Rows of the evaluation table from ``leaf evaluate`` results files (errors name file and field)."""
    rows = []
    for path in paths:
        path = Path(path)
        data = _read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), dict):
            raise DataError([f"{path}: field 'benchmarks': missing (not a `leaf evaluate` results file?)"])
        for name, b in data["benchmarks"].items():
            if not isinstance(b, dict) or not isinstance(b.get("accuracy"), (int, float)):
                raise DataError([f"{path}: field 'benchmarks.{name}.accuracy': missing or not a number"])
            rows.append({"model": data.get("model", ""), "benchmark": name, "task": b.get("task", ""),
                         "accuracy": float(b["accuracy"]), "correct": b.get("correct"), "total": b.get("total"),
                         "file": path.name})
    return rows


def _counterfactual_settings(path: Any) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
    """(settings the sidecar recorded, ``{field: {value: records}}`` of strategy/level/method/intervention)."""
    from collections import Counter

    from leaf.data.counterfactuals import read_counterfactuals
    from leaf.data.jsonl import meta_path
    from leaf.data.refs import is_ref

    if path is None:
        return {}, {}
    settings = {}
    if not is_ref(path):
        meta = _read_json(meta_path(path))
        settings = (meta or {}).get("settings") or {}
    counts: dict[str, Counter[str]] = {k: Counter() for k in ("strategy", "level", "method", "intervention")}
    for r in read_counterfactuals(path):
        for k, c in counts.items():
            c[str(getattr(r, k))] += 1
    return settings, {k: dict(c) for k, c in counts.items()}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value).replace("|", "\\|")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def card_data(config: DistillConfig) -> Any:
    """The front matter (huggingface_hub's ``ModelCardData``)."""
    from huggingface_hub import ModelCardData

    datasets = [d for d in (_hub_dataset(config.data), _hub_dataset(config.eval_data)) if d]
    return ModelCardData(
        base_model=None if _is_local(config.student) else config.student,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=list(TAGS),
        datasets=sorted(set(datasets)) or None,
        license=config.license,
    )


def model_card(config: DistillConfig, out: str | Path) -> str:
    """The card's text (front matter + body) from the run recorded in ``out``."""

    out = Path(out)
    recorded = _read_json(out / CONFIG_FILE) or {}
    run = recorded.get("_run", {})
    state = _read_json(out / "trainer_state.json") or {}
    history = state.get("log_history", [])
    evals = [e for e in history if "eval_loss" in e]
    train_logs = [e for e in history if "loss" in e]
    name = config.hub_model_id or out.resolve().name

    teacher = config.teacher
    if config.teacher_cache is not None:
        manifest = _read_json(Path(config.teacher_cache) / "manifest.json") or {}
        teacher = f"{manifest.get('teacher', '?')} (top-{manifest.get('k', '?')} log-probs cached in {config.teacher_cache})"
    student = f"`{config.student}`" + (" (a local folder)" if _is_local(config.student) else
                                       f" ([hub](https://huggingface.co/{config.student}))")

    parts = [MARKER, "", f"# {name}", "",
             (f"{student} distilled from the teacher `{teacher}` with [LeaF](https://arxiv.org/abs/2506.07851) "
              "(Learning to Focus: causal attention distillation via gradient-guided token pruning), using `leaf "
              "distill`. The student is trained to match the teacher's token distributions on the original samples "
              "(L_kd) and on counterfactual samples whose confounding tokens were pruned (L_cd)."), ""]

    parts += ["## Base model", "", f"- student (base model): {student}",
              f"- precision: {run.get('precision', '?')}; weights loaded as {config.dtype}"
              + (f"; LoRA r={config.lora_r}, alpha={config.lora_alpha} (merged into the saved weights)"
                 if config.lora_r else "; full fine-tuning"), ""]
    parts += ["## Teacher", "", f"- teacher: `{teacher}`", ""]

    rows: list[list[Any]] = []
    if config.data is not None:
        rows.append(["original samples (L_kd)", f"`{config.data}`",
                     run.get("examples", 0) - run.get("counterfactual_examples", 0)])
    if config.counterfactuals is not None:
        rows.append(["counterfactual samples (L_cd)", f"`{config.counterfactuals}`", run.get("counterfactual_examples", 0)])
    if config.eval_split > 0:
        rows.append([f"held out (--eval-split {config.eval_split:g}, seed {config.seed})", "from the above",
                     run.get("heldout_examples", 0)])
    if config.eval_data is not None:
        rows.append(["evaluation samples", f"`{config.eval_data}`", None])
    if config.eval_counterfactuals is not None:
        rows.append(["evaluation counterfactuals", f"`{config.eval_counterfactuals}`", None])
    parts += ["## Training data", "", _table(["part", "source", "examples"], rows), "",
              (f"Trained on {run.get('examples', '?')} examples ({run.get('counterfactual_examples', '?')} "
               f"counterfactual); evaluated on {run.get('eval_examples', 0)} held-out examples "
               f"({run.get('eval_counterfactual_examples', 0)} counterfactual), never trained on."), ""]

    lam = run.get("lambda_used", config.lam)
    loss = f"L = {lam:g} x L_kd + {1 - lam:g} x L_cd" + (f" + {config.alpha:g} x CE" if config.alpha else "")
    epochs = state.get("epoch")
    settings: list[list[Any]] = [
        ["lambda (weight of L_kd)", f"{lam:g}" + (f" (asked {config.lam:g})" if lam != config.lam else "")],
        ["loss", f"{loss}; token-level {config.divergence_spec().formula()} x T^2, each term a mean over its own loss tokens"],
        ["temperature T", f"{config.temperature:g}"],
        ["learning rate", f"{config.learning_rate:g} ({config.lr_scheduler}, {config.warmup_steps} warm-up steps)"],
        ["optimiser steps", state.get("global_step", "?")],
        ["epochs", f"{epochs:.2f}" if isinstance(epochs, (int, float)) else "?"],
        ["effective batch", (f"{run.get('effective_batch', '?')} (batch size {config.batch_size} x gradient "
                             f"accumulation {config.grad_accum} x {run.get('processes', '?')} processes)")],
        ["max length", config.max_length],
        ["batch order", config.mix],
        ["seed", config.seed],
    ]
    if train_logs:
        settings.append(["final training loss", train_logs[-1]["loss"]])
    cf_settings, cf_counts = _counterfactual_settings(config.counterfactuals)
    detection = cf_settings.get("detection") or {}
    prune = cf_settings.get("prune") or {}
    for key, label in (("tau", "detection threshold tau"), ("percentile", "detection percentile"),
                       ("cap", "percentile cap"), ("level", "detection level"), ("method", "saliency method"),
                       ("projection", "saliency projection"), ("select", "samples analysed"),
                       ("teacher", "detection teacher"), ("student", "detection student")):
        if key in detection:
            settings.append([label, str(detection[key])])
    for key, label in (("strategy", "pruning strategy"), ("intervention", "intervention"), ("verify", "verified")):
        if key in prune:
            settings.append([label, str(prune[key])])
    for key, counts in cf_counts.items():
        if counts and not (key in prune or (key in ("level", "method") and key in detection)):
            settings.append([f"{key} (counterfactual records)", ", ".join(f"{v}: {n}" for v, n in counts.items())])
    parts += ["## LeaF settings", "", _table(["setting", "value"], settings), ""]

    parts += ["## Evaluation", ""]
    if evals:
        parts += ["Distillation loss on the held-out examples during training (lower is better):", "",
                  _table(["step", "epoch", "eval loss", "L_kd", "L_cd"],
                         [[e.get("step"), e.get("epoch"), e["eval_loss"], e.get("eval_kd_loss"),
                           e.get("eval_cd_loss")] for e in evals]), ""]
    results = _results(list(config.card_results))
    if results:
        parts += ["Benchmarks (`leaf evaluate`):", "",
                  _table(["model", "benchmark", "task", "accuracy", "correct / total", "results file"],
                         [[r["model"], r["benchmark"], r["task"], f"{100 * r['accuracy']:.2f} %",
                           f"{r['correct']} / {r['total']}", r["file"]] for r in results]), ""]
    if not evals and not results:
        parts += ["No evaluation was recorded (see `--eval-split`, `--eval-data` and `--card-results`).", ""]

    settings_now = public_settings(config)
    defaults = public_settings(DistillConfig(student=config.student, out=config.out, teacher=config.teacher,
                                             data=config.data, counterfactuals=config.counterfactuals,
                                             teacher_cache=config.teacher_cache))
    keep = {k: v for k, v in settings_now.items()
            if k in ("student", "teacher", "data", "counterfactuals", "teacher_cache", "out") or v != defaults.get(k)}
    keep = {k: v for k, v in keep.items() if v is not None}
    parts += ["## How to reproduce", "",
              ("Save these settings (every option that differs from the default) as `distill.yaml` and run "
               "`leaf distill --config distill.yaml` (several GPUs: `accelerate launch -m leaf distill --config "
               "distill.yaml`). The complete settings are in `leaf_config.json`."), "",
              "```yaml", yaml.safe_dump(keep, sort_keys=False, allow_unicode=True).rstrip(), "```", ""]

    from huggingface_hub import ModelCard

    return str(ModelCard(f"---\n{card_data(config).to_yaml()}\n---\n\n" + "\n".join(parts)))


def write_card(config: DistillConfig, out: str | Path) -> Path:
    """Write ``out/README.md`` (replacing a card leaf wrote before; a README.md of someone else is kept and
    the card goes to ``README.leaf.md``)."""
    from leaf.data.jsonl import write_atomic

    path = Path(out) / CARD_FILE
    if path.exists() and MARKER not in path.read_text(encoding="utf-8", errors="replace"):
        log.warning("%s was not written by leaf: kept; the model card goes to README.leaf.md", path)
        path = path.with_name("README.leaf.md")
    write_atomic(path, model_card(config, out))
    return path


def push_to_hub(config: DistillConfig, out: str | Path) -> str:
    """Upload ``out`` (final model, tokenizer, card, metrics; no checkpoints) to the Hub; return the repo id.

    The token is ``--hub-token``, else ``HF_TOKEN``, else huggingface_hub's stored login.
    """
    from huggingface_hub import HfApi

    token = config.hub_token or os.environ.get("HF_TOKEN") or None
    api = HfApi(token=token)
    wanted = config.hub_model_id or Path(out).resolve().name
    try:
        url = api.create_repo(wanted, private=True if config.hub_private else None, exist_ok=True, repo_type="model")
    except Exception as exc:  # noqa: BLE001 - one clear line: which repository, why
        raise ConfigError(f"--push-to-hub: cannot create or reach the repository {wanted!r} "
                          f"({type(exc).__name__}: {exc}); check --hub-model-id and the token (--hub-token or "
                          "HF_TOKEN)") from None
    repo_id = getattr(url, "repo_id", None) or wanted
    state = _read_json(Path(out) / "trainer_state.json") or {}
    api.upload_folder(repo_id=repo_id, folder_path=str(out), repo_type="model", ignore_patterns=PUSH_IGNORE,
                      commit_message=f"leaf distill: {state.get('global_step', '?')} steps")
    log.info("pushed %s to https://huggingface.co/%s", out, repo_id)
    return repo_id


__all__ = ["CARD_FILE", "PUSH_IGNORE", "card_data", "model_card", "push_to_hub", "write_card"]
