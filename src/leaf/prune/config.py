"""Options of ``leaf prune`` (CLI flags, YAML keys and API arguments alike)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from leaf.checkers import CODE_SANDBOX_HELP, CODE_SANDBOXES, TASKS, check_answer_pattern, check_code_sandbox
from leaf.config import option
from leaf.models import DTYPES, check_device
from leaf.prune.counterfactuals import STRATEGIES
from leaf.prune.interventions import INTERVENTIONS, SOURCES


@dataclass
class PruneConfig:
    """Options of ``leaf prune`` (CLI flags, YAML keys and API arguments alike)."""

    data: Path = option(role="input", help="the original samples: JSONL or a dataset reference hf:NAME[:CONFIG][@SPLIT][#TARGET=COLUMN,...] (docs/data-format.md)")
    detections: Path = option(role="input", help="detections from `leaf detect` (instruction or response level)")
    out: Path = option(role="output", help="output counterfactual records (JSONL); a summary goes to OUT.summary.json")
    strategy: str = option("span", choices=STRATEGIES,
                           help="span: one record per flagged span (the paper's); collective: all spans at once")
    max_spans: int | None = option(None, low=1, help="use at most N spans per detection (the most confounding first)")
    intervention: str = option("delete", choices=INTERVENTIONS,
                               help="delete the flagged tokens (the paper's), mask them with a placeholder, "
                                    "resample them (same kind; from a model's next-token distribution or uniformly: "
                                    "--resample-from), or none: the analysed samples unchanged (re-weighting; docs/distill.md says when to use which)")
    mask_token: str | None = option(None, help="mask placeholder (default: the student tokenizer's mask/unk "
                                               "token, else [MASK])")
    resample_from: str = option("student", choices=SOURCES,
                                help="whose next-token distribution resample draws from; uniform: uniformly over the "
                                     "same valid candidates, no model (the --student tokenizer, else --teacher's)")
    draws: int = option(1, low=1, help="resample: independent draws per record, each its own record "
                                       "(<id>#d<k>; draws repeating an earlier one of the record are skipped)")
    seed: int = option(0, help="seed of the resample draws")
    verify: bool = option(False, help="keep a record only if teacher and student both answer it correctly")
    verify_with: str = option("both", choices=("both", "teacher"),
                              help="whose answers --verify checks: both models (the paper's) or the teacher alone "
                                   "(keeps records the student still gets wrong, e.g. a resampled value it copies)")
    teacher: str | None = option(None, help="teacher model, for --verify and --resample-from teacher")
    student: str | None = option(None, help="student model, for --verify, --resample-from student and the "
                                            "tokenizer of --resample-from uniform")
    task: str = option("exact", choices=TASKS, help="answer checker for --verify")
    answer_pattern: str | None = option(
        None, help="exact task: a regular expression with one group that finds the answer in a generation (the "
                   "last match), and in the reference response when a sample has no 'answer' (as lm-eval's filters)")
    code_sandbox: str = option("bwrap", choices=CODE_SANDBOXES, help=CODE_SANDBOX_HELP)
    max_new_tokens: int = option(256, low=1, help="generation length for --verify")
    batch_size: int = option(8, low=1, help="generation batch size for --verify")
    device: str = option("auto", check=check_device, help="device for --verify generation and resampling (auto: cuda if present)")
    dtype: str = option("auto", choices=DTYPES, help="model dtype for --verify and resampling (auto: bfloat16 on a GPU)")

    def validate(self) -> None:
        check_answer_pattern(self.task, self.answer_pattern)
        if self.verify:
            check_code_sandbox(self.task, self.code_sandbox)
        if self.verify and self.verify_with == "both" and not (self.teacher and self.student):
            raise ValueError("--verify needs --teacher and --student (or --verify-with teacher and --teacher)")
        if self.verify and not self.teacher:
            raise ValueError("--verify --verify-with teacher needs --teacher")
        if self.max_spans is not None and self.max_spans < 1:
            raise ValueError("--max-spans must be >= 1")
        if self.draws > 1 and self.intervention != "resample":
            raise ValueError(f"--draws {self.draws} needs --intervention resample (--intervention "
                             f"{self.intervention} draws nothing; leave --draws at 1)")
        if self.intervention == "resample":
            if self.resample_from == "uniform":
                if not (self.student or self.teacher):
                    raise ValueError("--resample-from uniform needs --student (or --teacher): its tokenizer, the "
                                     "one the detection used, names the candidates (no model is loaded)")
            elif not getattr(self, self.resample_from):
                raise ValueError(f"--intervention resample needs --{self.resample_from} (--resample-from)")
