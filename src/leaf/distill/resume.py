"""Resuming a distillation: the run folder's checkpoints and the rule for when its settings allow a resume."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from leaf.config import field_names, to_dict
from leaf.data.jsonl import SettingsMismatch
from leaf.distill.config import CONFIG_FILE, DistillConfig

log = logging.getLogger(__name__)


def checkpoints(output_dir: Path) -> list[Path]:
    return sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)


#: Options that do not change what is trained: a resumed run may differ in these.
RESUME_FREE = ("out", "overwrite", "logging_steps", "save_steps", "save_total_limit", "report_to",
                "dataloader_num_workers", "max_steps", "epochs", "eval_data", "eval_counterfactuals", "eval_steps",
                "eval_batch_size", "push_to_hub", "hub_model_id", "hub_private", "hub_token", "card_results",
                "license")


def resume_point(config: DistillConfig) -> bool:
    """The resume rule every stage shares: same folder + same settings resumes, other settings are refused.

    ``--overwrite`` deletes an earlier run's checkpoints and starts over.
    """
    out = Path(config.out)
    found = checkpoints(out)
    if not found:
        return False
    if config.overwrite:
        for path in found:
            shutil.rmtree(path)
        return False
    saved_file = out / CONFIG_FILE
    if saved_file.exists():
        saved = json.loads(saved_file.read_text())
        saved = {field_names(DistillConfig).get(k): v for k, v in saved.items() if k in field_names(DistillConfig)}
        now = to_dict(config)
        differ = sorted(k for k in saved if k not in RESUME_FREE and k in now and saved[k] != now[k])
        if differ:
            raise SettingsMismatch(
                f"{out} holds a run with other settings (differ in: {', '.join(differ)}); "
                "use another --out, or --overwrite to start over"
            )
    log.info("resuming from %s", found[-1])
    return True
