"""Options of the distillation stage: ``leaf distill`` and ``leaf cache-teacher``.

Each dataclass is the single definition of a command's flags, YAML keys and
Python keyword arguments (:mod:`leaf.config`). Importing this module is light
(no torch, no transformers), so the CLI can build its parser fast.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leaf.config import ConfigError, MissingExtra, option, to_dict
from leaf.distill.divergences import DIVERGENCES, Divergence
from leaf.distill.onpolicy import PROMPTS
from leaf.models import ATTENTION_HELP, PACKING_CHOICES, check_device, check_max_memory, packing_help
from leaf.sharding import SHARD_MODES, check_sharding, shard_help
from leaf.data.special import SPECIAL_TOKEN_POLICIES, SPECIAL_TOKENS_HELP

#: The module each tracker needs (checked before anything loads).
TRACKER_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


@dataclass
class DistillConfig:
    """Options of ``leaf distill`` (flags, YAML keys and ``distill()`` keyword arguments)."""

    student: str = option(help="student model: local folder or hub id")
    out: Path = option(role="output", help="run folder: checkpoints, metrics.jsonl/csv, final model, leaf_config.json; rerunning "
                       "with the same folder and settings resumes from its last checkpoint", aliases=["output_dir"])
    teacher: str | None = option(None, help="teacher model (not needed with --teacher-cache)")
    data: Path | None = option(None, role="input", help="original samples: JSONL or a dataset reference hf:NAME[:CONFIG][@SPLIT][#TARGET=COLUMN,...] (docs/data-format.md); give this and/or --counterfactuals")
    counterfactuals: Path | None = option(None, role="input", help="counterfactual records from `leaf prune` (JSONL)")
    teacher_cache: Path | None = option(None, role="input", help="folder written by `leaf cache-teacher`: train without loading the teacher")
    lam: float = option(0.5, low=0.0, high=1.0, help="lambda: weight of L_kd (originals); 1 - lambda weighs L_cd (counterfactuals)", aliases=["lambda"])
    cd_weighting: str = option("term-mean", choices=["term-mean", "token"],
                               help="how the two KL terms are weighted: term-mean = lambda x (mean over original tokens) + (1 - lambda) x (mean over counterfactual tokens), the paper's formula; token = one mean over all loss tokens, original tokens weighted lambda and counterfactual ones 1 - lambda (at lambda 0.5 every token alike, as when both kinds share one file)")
    temperature: float = option(1.0, low=1e-6, help="softmax temperature T of the KL (loss scaled by T^2)")
    alpha: float = option(0.0, low=0.0, help="weight of an extra cross-entropy on the reference response")
    divergence: str = option("forward-kl", choices=DIVERGENCES,
                             help="token divergence between teacher p and student q (docs/distill.md, Which divergence): "
                                  "forward-kl = KL(p||q); reverse-kl = KL(q||p); jsd = generalized Jensen-Shannon with "
                                  "--divergence-beta (0: forward KL, 1: reverse KL); skew-forward-kl = KL(p||a p + "
                                  "(1-a) q) and skew-reverse-kl = KL(q||a q + (1-a) p) with a = --divergence-alpha; "
                                  "tvd = total variation distance; each scaled by T^2")
    divergence_beta: float = option(0.5, low=0.0, high=1.0, help="beta of --divergence jsd: the mixture m = beta p + "
                                    "(1-beta) q; 0 = forward KL, 1 = reverse KL (TRL GKD's convention)")
    divergence_alpha: float = option(0.1, low=0.0, high=1.0, help="skew alpha of --divergence skew-forward-kl / "
                                     "skew-reverse-kl (0 = the plain KL; DistiLLM uses 0.1)")
    cross_tokenizer: str = option("off", choices=("off", "auto", "gold", "uld"),
                                  help="a teacher with another tokenizer (docs/distill.md, Teachers with another "
                                       "tokenizer): off = refuse it; auto = the same tokenizer as today, another one "
                                       "with gold; gold = the teacher sees its own rendering, responses aligned on "
                                       "characters, merged groups compared over the shared vocabulary plus a tail "
                                       "bucket with --divergence; uld = sorted-probability L1 on the same groups")
    student_responses: float = option(0.0, low=0.0, high=1.0,
                                      help="on-policy share (GKD's lambda): before each step, each example is drawn "
                                           "with this probability (seeded; a resumed run draws alike) and its "
                                           "reference response replaced by one the current student generates "
                                           "(docs/distill.md, Which responses); 0 = the reference responses only, "
                                           "1 = fully on-policy")
    student_prompt: str = option("source", choices=PROMPTS,
                                 help="what the student answers for a drawn counterfactual record: source = the "
                                      "original instruction of its source sample (the teacher then scores, on the "
                                      "pruned instruction, what the distracted student writes), own = the pruned "
                                      "instruction itself")
    student_max_new_tokens: int = option(512, low=1, help="longest response the student generates for "
                                         "--student-responses (tokens)")
    student_temperature: float = option(1.0, low=0.0, help="sampling temperature of the student's responses "
                                        "(0 = greedy)")
    kl_chunk_size: int = option(1024, help="loss tokens per chunk of fp32 log-probs (0 = all at once)")
    include_eos: bool = option(True, help="also train on the end-of-turn token after the response (teaches stopping)")
    max_length: int = option(4096, help="truncate rendered examples to this many tokens")
    special_tokens_in_text: str = option("warn", choices=SPECIAL_TOKEN_POLICIES, help=SPECIAL_TOKENS_HELP)
    epochs: float = option(3.0, low=0.0, help="training epochs", aliases=["num_train_epochs"])
    max_steps: int = option(-1, help="stop after this many optimiser steps (-1: run all epochs)")
    learning_rate: float = option(1e-5, help="peak learning rate")
    lr_scheduler: str = option("cosine", help="learning-rate schedule (a transformers scheduler name)",
                               aliases=["lr_scheduler_type"])
    warmup_steps: int = option(5, low=0, help="linear warm-up steps")
    weight_decay: float = option(0.0, help="AdamW weight decay")
    optim: str = option("adamw_torch", help="optimiser (a transformers optim name)")
    max_grad_norm: float = option(1.0, help="gradient clipping norm (0 = off)")
    batch_size: int = option(4, low=1, help="examples per device per micro-batch",
                             aliases=["per_device_batch_size", "per_device_train_batch_size"])
    grad_accum: int = option(8, low=1, help="gradient-accumulation steps; effective batch = batch_size x grad_accum x processes (paper: 32)", aliases=["gradient_accumulation_steps"])
    precision: str = option("auto", help="auto = bf16 where the hardware has it, else fp32", choices=["auto", "bf16", "fp16", "fp32"])
    dtype: str = option("float32", help="dtype the student's weights are loaded in (float32: the master weights of mixed-precision training, which --precision sets)", choices=["float32", "bfloat16", "float16"], aliases=["student_dtype"])
    teacher_dtype: str = option("auto", help="teacher weights' dtype; auto = bfloat16 when training in bf16, else float32", choices=["auto", "float32", "bfloat16", "float16"])
    device: str = option("auto", check=check_device, help="device of the student (auto: cuda if present, else cpu; cuda:N: that GPU, in a one-process run; under torchrun / accelerate launch each process takes its own)")
    teacher_device: str | None = option(None, check=check_device, help="device of the teacher (default: the student's)")
    teacher_device_map: str | None = option(None, help="device_map of the teacher, e.g. auto (spread over GPUs)")
    teacher_max_memory: str | None = option(None, check=check_max_memory, help="cap per device for the teacher's placement (implies --teacher-device-map auto): comma-separated device=size, a device being a GPU index, cpu or disk, a size in GiB/GB/MiB/MB (e.g. 0=70GiB,1=70GiB,cpu=100GiB)", aliases=["max_memory"])
    gradient_checkpointing: bool = option(False, help="recompute activations in backward (less memory)")
    lora_r: int = option(0, help="LoRA rank (0 = full fine-tuning); needs peft")
    lora_alpha: int = option(16, help="LoRA alpha")
    lora_dropout: float = option(0.05, help="LoRA dropout")
    lora_target_modules: list[str] = option(default_factory=lambda: ["all-linear"], help="modules LoRA adapts")
    logging_steps: int = option(1, help="log metrics every N optimiser steps")
    save_steps: int = option(500, help="checkpoint every N optimiser steps")
    save_total_limit: int = option(2, help="keep at most N checkpoints")
    report_to: list[str] = option(default_factory=lambda: ["none"], choices=["none", "tensorboard", "wandb", "mlflow"],
                                  help="also log to these trackers (several allowed); each needs its package")
    seed: int = option(42, help="random seed (data order, init of LoRA)")
    dataloader_num_workers: int = option(0, help="data-loader worker processes")
    pad_to_multiple_of: int | None = option(None, help="pad batch length to a multiple of this (e.g. 8 on tensor cores)")
    mix: str = option("interleave", help="batch order: interleave = originals and counterfactuals evenly spread over every step; shuffle = one random pool", choices=["interleave", "shuffle"])
    overwrite: bool = option(False, help="start over: delete the checkpoints of an earlier run in --out instead of resuming")
    chunked_head: str = option(
        "auto", choices=("auto", "always", "never"),
        help="apply the output heads to the loss positions a chunk at a time from hidden states (no (tokens x "
             "vocabulary) logits; a plain linear head gets its gradients chunk by chunk in the forward pass, other "
             "heads are recomputed in backward): always, never, or auto = when a micro-batch's fp32 "
             "logits would exceed 256 MiB (large vocabularies and long responses; small ones keep the faster "
             "full-logit path)")
    eval_data: Path | None = option(None, role="input", help="held-out original samples (JSONL or hf: dataset reference) to evaluate the distillation loss on every --eval-steps (never trained on)")
    eval_counterfactuals: Path | None = option(None, role="input", help="held-out counterfactual records to evaluate on (the L_cd part); with or without --eval-data")
    eval_split: float = option(0.0, low=0.0, high=0.9, help="hold out this fraction of the training sources for evaluation: each original sample with all its counterfactuals (by source_id), chosen by --seed, never trained on (0 = off)")
    eval_steps: int | None = option(None, low=1, help="evaluate every N optimiser steps (default: --save-steps), and once when training ends")
    eval_batch_size: int | None = option(None, low=1, help="examples per device per evaluation batch (default: --batch-size)")
    push_to_hub: bool = option(False, help="after training, upload the final model, its tokenizer, the model card and the run's metrics to the Hugging Face Hub (huggingface_hub's create_repo + upload_folder; checkpoints stay local)")
    hub_model_id: str | None = option(None, help="repository to push to: OWNER/NAME, or NAME in your own namespace (default: the name of --out)")
    hub_private: bool = option(False, help="create the Hub repository as private (an existing one keeps its visibility)", aliases=["hub_private_repo"])
    hub_token: str | None = option(None, help="Hub token (default: the HF_TOKEN environment variable, else the token of `hf auth login`); never written to any file")
    card_results: list[Path] = option(default_factory=list, role="input", help="results JSON files of `leaf evaluate` whose accuracies go into the model card's evaluation table")
    license: str | None = option(None, help="license of the model card's front matter (e.g. apache-2.0)")
    packing: str = option("auto", choices=PACKING_CHOICES, help=packing_help("each micro-batch's examples"))
    attention: str | None = option(None, help=ATTENTION_HELP)
    group_by_length: bool = option(False, help="batch examples of similar length (less padding): transformers' length-grouped sampler with --mix shuffle; with --mix interleave, sorted by length within windows of 50 x the batch size, both kinds still in every step")

    def validate(self) -> None:
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"lam (--lambda) must be in [0, 1], got {self.lam}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.alpha < 0:
            raise ConfigError(f"alpha must be >= 0, got {self.alpha}")
        try:
            self.divergence_spec()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.teacher is None and self.teacher_cache is None:
            raise ConfigError("give --teacher or --teacher-cache")
        if self.data is None and self.counterfactuals is None:
            raise ConfigError("give --data and/or --counterfactuals")
        if self.teacher_cache is None and self.alpha == 0 and _same_model(self.teacher, self.student):
            raise ConfigError(f"--teacher {self.teacher} is the student itself and --alpha is 0: every distillation "
                              "term is zero, nothing would train; give another teacher, or --alpha > 0 to "
                              "fine-tune on the reference responses with a KL anchor to the model itself")
        if self.student_responses > 0 and self.teacher_cache is not None:
            raise ConfigError("--student-responses with --teacher-cache: the cache scores the reference responses "
                              "only; the teacher must score the student's own, so give a live --teacher")
        if self.eval_data is not None and self.teacher_cache is not None:
            raise ConfigError("--eval-data with --teacher-cache: the cache holds no targets for those samples; "
                              "use --eval-split (held out from the cached data) or a live --teacher")
        if self.eval_counterfactuals is not None and self.teacher_cache is not None:
            raise ConfigError("--eval-counterfactuals with --teacher-cache: the cache holds no targets for those "
                              "records; use --eval-split or a live --teacher")
        if self.hub_model_id is not None and not self.hub_model_id.strip("/ "):
            raise ConfigError("hub_model_id is empty")
        if "none" in self.report_to and len(self.report_to) > 1:
            raise ConfigError("report_to: 'none' cannot be combined with a tracker")

    def divergence_spec(self) -> Divergence:
        """The token divergence these options name (``--divergence`` with its beta / alpha)."""
        return Divergence(self.divergence, beta=self.divergence_beta, alpha=self.divergence_alpha)

    @property
    def has_eval(self) -> bool:
        """Is there a held-out evaluation set (--eval-data, --eval-counterfactuals or --eval-split)?"""
        return self.eval_data is not None or self.eval_counterfactuals is not None or self.eval_split > 0

    def check_trackers(self) -> None:
        """Refuse (one line) a tracker whose package is not installed: checked when a run starts, not when a
        config is read (a recipe or a dry run may describe a run for another machine)."""
        missing = [t for t in self.report_to if t != "none" and importlib.util.find_spec(TRACKER_MODULES[t]) is None]
        if missing:
            raise MissingExtra(f"--report-to {' '.join(missing)} needs the {', '.join(missing)} package(s): "
                               f"pip install {' '.join(missing)}")


@dataclass
class CacheConfig:
    """Options of ``leaf cache-teacher``."""

    teacher: str = option(help="teacher model: local folder or hub id")
    out: Path = option(role="output", help="cache folder (manifest.json + safetensors shards)")
    data: Path | None = option(None, role="input", help="original samples: JSONL or a dataset reference hf:NAME[:CONFIG][@SPLIT][#TARGET=COLUMN,...] (docs/data-format.md)")
    counterfactuals: Path | None = option(None, role="input", help="counterfactual records (JSONL)")
    tokenizer: str | None = option(None, help="tokenizer (and chat template) to render with: give the STUDENT's; default the teacher's")
    cross_tokenizer: str = option("off", choices=("off", "auto", "gold"),
                                  help="a teacher whose tokenizer differs from --tokenizer: off = refuse it; auto = "
                                       "one tokenizer as today, another one with gold; gold = the teacher runs on its "
                                       "own rendering of each sample and the cache stores its top k at its own tokens "
                                       "(with their ids, the log-prob of each actual token and the teacher's "
                                       "tokenizer), for `leaf distill --cross-tokenizer auto`")
    top_k: int = option(64, low=1, help="teacher log-probs kept per token")
    temperature: float = option(1.0, low=1e-6, help="temperature T of the cached log-probs (training must use the same)")
    include_eos: bool = option(True, help="also cache the end-of-turn token after the response")
    max_length: int = option(4096, help="truncate rendered examples to this many tokens")
    special_tokens_in_text: str = option("warn", choices=SPECIAL_TOKEN_POLICIES, help=SPECIAL_TOKENS_HELP)
    batch_size: int = option(8, low=1, help="examples per teacher forward")
    max_tokens_per_batch: int | None = option(
        None, low=1, help="also cap each teacher forward at this many tokens once padded (batches of similar-length "
                          "examples)")
    shard_size: int = option(1024, help="examples per shard file")
    store_dtype: str = option("float32", help="dtype of stored log-probs", choices=["float32", "float16", "bfloat16"])
    dtype: str = option("auto", help="teacher weights' dtype (auto: bfloat16 on GPU, float32 on CPU)", choices=["auto", "float32", "bfloat16", "float16"])
    device: str = option("auto", check=check_device, help="device of the teacher (auto: cuda if present, else cpu)")
    device_map: str | None = option(None, help="device_map of the teacher, e.g. auto")
    max_memory: str | None = option(None, check=check_max_memory, help="cap per device for the teacher's placement (implies --device-map auto): comma-separated device=size, a device being a GPU index, cpu or disk, a size in GiB/GB/MiB/MB (e.g. 0=70GiB,1=70GiB,cpu=100GiB)")
    shard_models: str = option("none", choices=SHARD_MODES, help=shard_help("the teacher's"))
    packing: str = option("auto", choices=PACKING_CHOICES, help=packing_help("each batch's examples"))
    attention: str | None = option(None, help=ATTENTION_HELP)
    overwrite: bool = option(False, help="discard an existing cache written with other settings")

    def validate(self) -> None:
        check_sharding(self.shard_models, device=self.device,
                       conflicts={"--device-map": self.device_map, "--max-memory": self.max_memory})
        if self.data is None and self.counterfactuals is None:
            raise ConfigError("give --data and/or --counterfactuals")
        if self.top_k < 1:
            raise ConfigError("top_k must be >= 1")
        if self.temperature <= 0:
            raise ConfigError("temperature must be > 0")


def _same_model(a: str | None, b: str | None) -> bool:
    """Whether two model references name one model: the same local folder, or the same hub id."""
    if a is None or b is None:
        return False
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return str(a).rstrip("/") == str(b).rstrip("/")


#: The run folder's record of the settings (and of the run: ``_run``), read by resume and the model card.
CONFIG_FILE = "leaf_config.json"
#: Options never written to leaf_config.json or the model card.
SECRET_OPTIONS = ("hub_token",)


def public_settings(config: DistillConfig) -> dict[str, Any]:
    """The config as leaf_config.json and the model card record it: JSON-safe, secrets (the Hub token) left out."""
    record = to_dict(config)
    for name in SECRET_OPTIONS:
        record.pop(name, None)
    return json.loads(json.dumps(record, default=str))
