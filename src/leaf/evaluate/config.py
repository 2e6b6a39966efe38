"""Options of ``leaf evaluate`` and ``leaf label`` (flags, YAML keys and keyword arguments alike)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from leaf.checkers import CODE_SANDBOX_HELP, CODE_SANDBOXES, TASKS, check_answer_pattern, check_code_sandbox
from leaf.config import ConfigError, option
from leaf.data.special import SPECIAL_TOKEN_POLICIES, SPECIAL_TOKENS_HELP
from leaf.generation import BACKENDS
from leaf.models import DTYPES, check_device


def check_sampling(do_sample: bool, temperature: float) -> None:
    """Sampling at temperature 0 is no distribution: refuse it (greedy decoding is the default)."""
    if do_sample and temperature <= 0:
        raise ConfigError(f"option 'temperature': {temperature!r} with --do-sample must be > 0 (leave out --do-sample "
                          "for greedy decoding)")


@dataclass
class EvaluateConfig:
    """Options of ``leaf evaluate`` (flags, YAML keys and keyword arguments alike)."""

    model: str | None = option(None, help="model to evaluate (local directory or hub id)")
    benchmark: list[str] = option(
        role="input", default_factory=list,
        help="benchmarks: NAME (gsm8k, math500, olympiadbench, humaneval, humaneval-plus, leetcode, livecodebench, "
        "hotpotqa, 2wikimultihopqa, musique), NAME=PATH (a local copy), a sample JSONL file or a dataset reference hf:NAME[:CONFIG][@SPLIT][#TARGET=COLUMN,...] of samples (both with --task)",
    )
    out: Path | None = option(None, role="output", help="results JSON (generations go to <out stem>.generations/<benchmark>.jsonl)")
    task: str | None = option(
        None, help="answer checker for sample files / predictions", choices=TASKS
    )
    predictions: Path | None = option(
        None, role="input", help="score these generations (JSONL with id + prediction) instead of generating"
    )
    compare: list[Path] = option(role="input", default_factory=list, help="print a table comparing these results files and exit")
    arm: list[str] = option(default_factory=list,
                            help="NAME=RESULTS.json[,RESULTS.json...]: an arm with one results file per seed; repeat "
                                 "the flag: prints each arm's accuracy over seeds and its paired comparison with the "
                                 "first arm (per-problem McNemar tests), writes them as JSON to --out if given, exits")
    name: str | None = option(None, help="row label of this model in tables (default: --model)")
    max_new_tokens: int | None = option(None, low=1, help="generation budget (default: per benchmark, 512-2048)")
    batch_size: int = option(8, low=1, help="prompts per generation batch")
    max_tokens_per_batch: int | None = option(
        None, low=1, help="also cap each batch at this many tokens once padded (prompt + generated): batches of "
                          "similar-length prompts, many short ones or few long ones")
    backend: str = option(
        "auto", help="generation backend: vllm when installed and a GPU is present", choices=BACKENDS
    )
    dtype: str = option("auto", help="model dtype", choices=DTYPES)
    device: str = option("auto", check=check_device, help="torch device for the transformers backend (auto: cuda if present)")
    limit: int | None = option(None, low=1, help="evaluate only the first N samples of each benchmark")
    do_sample: bool = option(False, help="sample instead of greedy decoding")
    temperature: float = option(1.0, low=0.0, help="sampling temperature (with --do-sample)")
    top_p: float = option(1.0, low=0.0, high=1.0, help="nucleus sampling mass (with --do-sample)")
    seed: int = option(0, help="random seed for sampling")
    workers: int = option(4, help="code checks run in parallel in this many sandboxes")
    code_timeout: float = option(10.0, help="seconds per program run for code benchmarks")
    code_sandbox: str = option("bwrap", choices=CODE_SANDBOXES, help=CODE_SANDBOX_HELP)
    answer_pattern: str | None = option(
        None, help="exact task: a regular expression with one group that finds the answer in a generation (the "
                   "last match), and in the reference response when a sample has no 'answer' (as lm-eval's filters)")
    overwrite: bool = option(False, help="discard earlier generations written with other settings")
    special_tokens_in_text: str = option("warn", choices=SPECIAL_TOKEN_POLICIES, help=SPECIAL_TOKENS_HELP)

    def validate(self) -> None:
        check_answer_pattern(self.task, self.answer_pattern)
        check_sampling(self.do_sample, self.temperature)
        check_code_sandbox(self.task, self.code_sandbox)
        if self.compare and self.arm:
            raise ConfigError("give --compare or --arm, not both")
        if self.arm:
            from leaf.evaluate.arms import parse_arm

            names = [parse_arm(a)[0] for a in self.arm]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ConfigError(f"--arm: the arm {twice[0]!r} is given twice")
            return
        if self.compare:
            return
        if self.predictions is None and (not self.model or not self.benchmark):
            raise ConfigError("give --model and --benchmark (or --predictions with --task, or --compare)")
        if self.predictions is not None and not self.task and not self.benchmark:
            raise ConfigError("--predictions needs --task (or a --benchmark that names the task)")
        if self.out is None:
            raise ConfigError("give --out results.json")


@dataclass
class LabelConfig:
    """Options of ``leaf label``."""

    teacher: str = option(help="teacher model (local directory or hub id)")
    student: str = option(help="student model (local directory or hub id)")
    data: Path = option(role="input", help="samples: JSONL (leaf's sample format) or a dataset reference hf:NAME[:CONFIG][@SPLIT][#TARGET=COLUMN,...] (docs/data-format.md)")
    task: str = option(help="answer checker", choices=TASKS)
    out: Path = option(role="output", help="labelled JSONL (input records + teacher/student generations and verdicts)")
    max_new_tokens: int = option(1024, low=1, help="generation budget per answer")
    batch_size: int = option(8, low=1, help="prompts per generation batch")
    max_tokens_per_batch: int | None = option(
        None, low=1, help="also cap each batch at this many tokens once padded (prompt + generated): batches of "
                          "similar-length prompts, many short ones or few long ones")
    backend: str = option("auto", help="generation backend", choices=BACKENDS)
    dtype: str = option("auto", help="model dtype", choices=DTYPES)
    device: str = option("auto", check=check_device, help="torch device for the transformers backend (auto: cuda if present)")
    do_sample: bool = option(False, help="sample instead of greedy decoding")
    temperature: float = option(1.0, low=0.0, help="sampling temperature (with --do-sample)")
    top_p: float = option(1.0, low=0.0, high=1.0, help="nucleus sampling mass (with --do-sample)")
    seed: int = option(0, help="random seed for sampling")
    code_timeout: float = option(10.0, help="seconds per program run (code task)")
    code_sandbox: str = option("bwrap", choices=CODE_SANDBOXES, help=CODE_SANDBOX_HELP)
    answer_pattern: str | None = option(
        None, help="exact task: a regular expression with one group that finds the answer in a generation (the "
                   "last match), and in the reference response when a sample has no 'answer' (as lm-eval's filters)")
    skip_ungradable: bool = option(
        False, help="leave out samples the checker cannot judge (no gold answer / tests) instead of stopping"
    )
    overwrite: bool = option(False, help="start over even if outputs of other settings exist")
    special_tokens_in_text: str = option("warn", choices=SPECIAL_TOKEN_POLICIES, help=SPECIAL_TOKENS_HELP)

    def validate(self) -> None:
        check_answer_pattern(self.task, self.answer_pattern)
        check_sampling(self.do_sample, self.temperature)
        check_code_sandbox(self.task, self.code_sandbox)
