"""Options of ``leaf detect`` (CLI flags, YAML keys and API arguments alike)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leaf.config import option
from leaf.data.render import RENDER_MODES
from leaf.data.special import SPECIAL_TOKEN_POLICIES, SPECIAL_TOKENS_HELP
from leaf.detect.decision import DEFAULT_TAU, PERCENTILE_CAP
from leaf.detect.methods import METHODS
from leaf.detect.prepare import TRUNCATION_POLICIES
from leaf.detect.projection import RULES
from leaf.models import ATTENTION_HELP, DTYPES, PACKING_CHOICES, check_device, check_max_memory, packing_help
from leaf.sharding import SHARD_MODES, check_sharding, shard_help


@dataclass
class DetectConfig:
    """Options of ``leaf detect`` (CLI flags, YAML keys and API arguments alike)."""

    teacher: str = option(help="teacher model: local directory or hub id")
    student: str = option(help="student model: local directory or hub id")
    data: Path = option(role="input", help="input samples: JSONL or a dataset reference hf:NAME[:CONFIG][@SPLIT][#TARGET=COLUMN,...] (docs/data-format.md)")
    out: Path = option(role="output", help="output detections JSONL; rerunning with the same path resumes")
    tau: float | None = option(None, low=0.0, high=1.0,
                               help=f"flag tokens with normalised score d <= tau (default {DEFAULT_TAU})")
    percentile: float | None = option(
        None, low=0.0, high=100.0,
        help=f"instead of tau: flag the lowest P % of d per sample (threshold capped at {PERCENTILE_CAP})"
    )
    level: str = option("instruction", choices=("instruction", "response"),
                        help="instruction: score the instruction, loss on the response; response: score the "
                             "instruction and earlier response segments, loss on each later segment")
    segments: int = option(2, help="response level: split each response into this many segments (2 or 3)")
    method: str = option("gradient", choices=tuple(METHODS),
                         help="gradient (LeaF), or the ablation baselines random / ppl (same token count)")
    seed: int = option(0, help="seed of the random method")
    select: str = option("all", help="which samples: all, or student-wrong (teacher right, student wrong)",
                         choices=("all", "student-wrong"))
    batch_size: int = option(8, low=1, help="samples per forward/backward pass")
    max_tokens_per_batch: int | None = option(
        None, low=1, help="also cap each batch at this many tokens once padded: batches of similar lengths, many "
                          "short samples or few long ones")
    max_length: int = option(2048, help="maximum tokens of a rendered sample")
    truncation: str = option("left", choices=TRUNCATION_POLICIES,
                             help="over-long samples: cut the instruction from the left, or skip them")
    dtype: str = option("auto", choices=DTYPES, help="model weights dtype (auto: bfloat16 on a GPU, else float32)")
    device: str = option("auto", check=check_device, help="torch device for both models (auto: cuda if present, else cpu; or cuda:1, ...)")
    teacher_device: str | None = option(None, check=check_device, help="device for the teacher (default: --device)")
    teacher_device_map: str | None = option(
        None, help="place the teacher across devices with accelerate (e.g. auto); overrides --teacher-device"
    )
    max_memory: str | None = option(
        None, check=check_max_memory, help="cap per device for the teacher's placement (implies --teacher-device-map auto): comma-separated device=size, a device being a GPU index, cpu or disk, a size in GiB/GB/MiB/MB (e.g. 0=70GiB,1=70GiB,cpu=100GiB)"
    )
    projection: str = option("mean", choices=RULES,
                             help="how teacher scores are carried onto student tokens when tokenizers differ")
    shard_models: str = option("none", choices=SHARD_MODES, help=shard_help("the teacher's and the student's"))
    packing: str = option("auto", choices=PACKING_CHOICES, help=packing_help("each batch's samples"))
    attention: str | None = option(None, help=ATTENTION_HELP)
    gradient_checkpointing: bool = option(
        False, help="recompute decoder activations in the backward pass: memory grows about linearly with length "
                    "(same results, slower)")
    overwrite: bool = option(False, help="start over instead of resuming an existing --out")
    progress: bool = option(True, help="show a progress bar")
    render: str = option("auto", choices=RENDER_MODES,
                         help="how samples are rendered: the chat template verbatim (template), the generation prompt "
                              "then the response verbatim then the end-of-turn token (prompt-then-response, for "
                              "reasoning templates that rewrite the assistant turn), or auto: template, else "
                              "prompt-then-response for a sample the template cannot render verbatim")

    special_tokens_in_text: str = option("warn", choices=SPECIAL_TOKEN_POLICIES, help=SPECIAL_TOKENS_HELP)

    def validate(self) -> None:
        if self.tau is not None and self.percentile is not None:
            raise ValueError("give either --tau or --percentile, not both")
        if self.percentile is not None and not 0 < self.percentile <= 100:
            raise ValueError("--percentile must be in (0, 100]")
        if self.batch_size < 1 or self.max_length < 8:
            raise ValueError("--batch-size must be >= 1 and --max-length >= 8")
        if self.segments not in (2, 3):
            raise ValueError("--segments must be 2 or 3")
        check_sharding(self.shard_models, device=self.device, conflicts={
            "--teacher-device": self.teacher_device, "--teacher-device-map": self.teacher_device_map,
            "--max-memory": self.max_memory})

    @property
    def rule(self) -> dict[str, Any]:
        if self.percentile is not None:
            return {"percentile": self.percentile, "cap": PERCENTILE_CAP}
        return {"tau": DEFAULT_TAU if self.tau is None else self.tau}
