"""Options of ``leaf analyze``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from leaf.config import ConfigError, option
from leaf.data.special import SPECIAL_TOKEN_POLICIES, SPECIAL_TOKENS_HELP
from leaf.models import DTYPES, check_device


@dataclass
class AnalyzeConfig:
    """Options of ``leaf analyze``."""

    model: list[str] = option(help="model directory or hub id; repeat the flag (or list several) to compare models")
    data: Path = option(role="input", help="detections.jsonl, counterfactuals.jsonl, or samples with meta.confounder_spans")
    out: Path = option(role="output", help="output folder (attention.json, attention_samples.jsonl, PNGs)")
    samples: Path | None = option(
        None, role="input", help="the original samples (needed for a detections file; optional for counterfactuals)"
    )
    label: list[str] | None = option(None, help="one display name per --model (default: the folder name)")
    responses: list[Path] | None = option(
        None, role="input",
        help="one generations file per --model (`leaf evaluate`'s RESULTS.generations/SPLIT.jsonl: id, generation): "
             "the queries are then that model's own answers instead of the data's reference responses, cut after "
             "the first line starting with '####' when there is one; samples it has no generation for are skipped")
    max_samples: int | None = option(None, help="analyse at most this many samples (in file order)")
    max_length: int = option(2048, help="skip samples longer than this many tokens")
    collect: str = option(
        "output_attentions",
        help="how attention weights are read: output_attentions (all layers at once, L*H*T*T numbers) or hooks "
        "(each layer reduced as it is computed: one layer's weights in memory)",
        choices=("output_attentions", "hooks"),
    )
    heatmaps: int = option(4, help="draw a heatmap (and keep per-token attention) for the first N samples")
    dtype: str = option("auto", help="model dtype (auto: bfloat16 on a GPU, else float32)", choices=DTYPES)
    device: str = option("auto", check=check_device, help="torch device (auto: cuda if present, else cpu; or cuda:0, ...)")
    device_map: str | None = option(
        None, help="e.g. 'auto' to spread a large model over several GPUs (then --device is ignored)"
    )
    special_tokens_in_text: str = option("warn", choices=SPECIAL_TOKEN_POLICIES, help=SPECIAL_TOKENS_HELP)
    overwrite: bool = option(False, help="start over instead of resuming an existing OUT/attention_samples.jsonl")
    plots: bool = option(True, help="draw PNG figures (needs matplotlib: pip install 'leaf[analysis]')")

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("give at least one --model")
        if self.label is not None and len(self.label) != len(self.model):
            raise ConfigError(f"--label: got {len(self.label)} label(s) for {len(self.model)} model(s)")
        if self.responses is not None and len(self.responses) != len(self.model):
            raise ConfigError(f"--responses: got {len(self.responses)} file(s) for {len(self.model)} model(s)")
        labels = self.labels()
        if len(set(labels)) != len(labels):
            raise ConfigError(f"model labels must be unique, got {labels}; pass --label")
        if self.max_length < 2:
            raise ConfigError("--max-length must be at least 2")

    def labels(self) -> list[str]:
        if self.label:
            return list(self.label)
        return [Path(m.rstrip("/")).name or m for m in self.model]
