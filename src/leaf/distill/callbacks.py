"""Trainer callbacks of a distillation: the metrics files of the run folder and a quiet progress bar."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

#: One row per evaluation on the held-out set (step, epoch, eval_loss, eval_kd_loss, eval_cd_loss, ...).
EVAL_METRICS_FILE = "eval_metrics.jsonl"

METRIC_FIELDS = ("step", "epoch", "loss", "kd_loss", "cd_loss", "ce_loss", "lr", "grad_norm", "tokens_per_s")


def metrics_callback(output_dir: Path) -> Any:

    class MetricsFiles(TrainerCallback):
        """Writes DIR/metrics.jsonl and DIR/metrics.csv (one row per logging step) and DIR/eval_metrics.jsonl
        (one row per evaluation), on the main process."""

        def __init__(self) -> None:
            self.jsonl = output_dir / "metrics.jsonl"
            self.csv = output_dir / "metrics.csv"
            self.eval = output_dir / EVAL_METRICS_FILE

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if not state.is_world_process_zero:
                return
            if self.eval.exists():  # a resumed run: drop evaluations past the checkpoint
                kept = [x for x in self.eval.read_text().splitlines() if x.strip() and json.loads(x)["step"] <= state.global_step]
                self.eval.write_text("".join(x + "\n" for x in kept))
            rows = []
            if self.jsonl.exists():  # a resumed run: drop rows past the checkpoint
                rows = [json.loads(x) for x in self.jsonl.read_text().splitlines() if x.strip()]
                rows = [r for r in rows if r["step"] <= state.global_step]
            self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
            with self.csv.open("w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
                w.writeheader()
                w.writerows({k: r.get(k) for k in METRIC_FIELDS} for r in rows)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if not state.is_world_process_zero or not logs or "kd_loss" not in logs:
                return
            row = {
                "step": state.global_step,
                "epoch": logs.get("epoch", state.epoch),
                "loss": logs["loss"],
                "kd_loss": logs["kd_loss"],
                "cd_loss": logs["cd_loss"],
                "ce_loss": logs["ce_loss"],
                "lr": logs.get("learning_rate"),
                "grad_norm": logs.get("grad_norm"),
                "tokens_per_s": logs["tokens_per_s"],
            }
            for key in ("aligned_1to1", "aligned_merged",  # cross-tokenizer runs: shares of student loss tokens
                        "student_responses", "student_response_tokens", "generation_share"):  # on-policy runs
                if key in logs:
                    row[key] = logs[key]
            with self.jsonl.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            with self.csv.open("a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=METRIC_FIELDS, extrasaction="ignore").writerow(row)  # jsonl: all keys

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None,
                        **kw: Any) -> None:
            if not state.is_world_process_zero or not metrics:
                return
            row = {"step": state.global_step, "epoch": state.epoch,
                   **{k: v for k, v in metrics.items() if k.startswith("eval_")}}
            self.eval.parent.mkdir(parents=True, exist_ok=True)
            with self.eval.open("a") as fh:
                fh.write(json.dumps(row) + "\n")

    return MetricsFiles()


def _quiet_progress() -> type:
    from transformers.trainer_callback import ProgressCallback

    class QuietProgress(ProgressCallback):
        """The Trainer's progress bar without its raw ``{'loss': ...}`` lines (metrics.jsonl/csv hold them)."""

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            return None

    return QuietProgress


QuietProgress = _quiet_progress()
