"""Options of ``leaf demo``, its two benchmark settings and the arms it compares."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from pathlib import Path

from leaf.config import option
from leaf.detect.decision import DEFAULT_TAU

SPLITS = ("confounded", "counterfactual", "clean")
SETTINGS = ("v1", "v2")


@dataclass(frozen=True)
class CfSet:
    """One counterfactual set: which detections, and how ``leaf prune`` turns them into records."""

    detections: str  #: detection file stem in the seed folder (``det_gradient`` ...)
    strategy: str = "span"
    intervention: str = "delete"
    resample_from: str = "student"
    draws: int = 1
    verify: str | None = None  #: ``none`` / ``teacher`` / ``both``; None: the demo's ``--verify``


#: Counterfactual sets by name. ``det_gradient_all`` is detection with ``--select all``.
CF_SETS: dict[str, CfSet] = {
    "gradient": CfSet("det_gradient"),
    "gradient_collective": CfSet("det_gradient", "collective"),
    "gradient_response": CfSet("det_gradient_response"),
    "random": CfSet("det_random"),
    "ppl": CfSet("det_ppl"),
    "oracle": CfSet("det_oracle"),
    "gradient_mask": CfSet("det_gradient", intervention="mask"),
    "gradient_resample": CfSet("det_gradient", intervention="resample"),
    "gradient_resample_k3": CfSet("det_gradient", intervention="resample", draws=3),
    "gradient_resample_teacher": CfSet("det_gradient", intervention="resample", resample_from="teacher"),
    "gradient_resample_teacher_k3": CfSet("det_gradient", intervention="resample", resample_from="teacher", draws=3),
    "gradient_resample_uniform": CfSet("det_gradient", intervention="resample", resample_from="uniform"),
    "gradient_resample_uniform_k3": CfSet("det_gradient", intervention="resample", resample_from="uniform", draws=3),
    "oracle_mask": CfSet("det_oracle", intervention="mask"),
    "oracle_resample": CfSet("det_oracle", intervention="resample"),
    "selected": CfSet("det_gradient", intervention="none"),
    "gradient_verify_both": CfSet("det_gradient", verify="both"),
    "gradient_unverified": CfSet("det_gradient", verify="none"),
    "all": CfSet("det_gradient_all"),
    "all_resample": CfSet("det_gradient_all", intervention="resample"),
}


@dataclass(frozen=True)
class Arm:
    """One distillation arm.

    ``sets``: counterfactual sets in the second loss term (``()``: plain KD, lambda 1; ``None``: no
    training, the student as built; ``"extra"``: KD on the pool plus as many extra originals as the
    gradient set has records, the compute-matched control). ``lam``: this arm's lambda (default: the
    demo's ``--lam``). ``cd_weighting``: how the two loss terms are weighted (``leaf distill --cd-weighting``).
    ``options``: other ``leaf distill`` options of this arm (``(name, value)`` pairs: the divergence, on-policy
    responses). ``other_tokenizer``: distil from the teacher with another tokenizer, trained as the teacher was
    (:func:`leaf.demo.models.other_tokenizer_teacher`), across tokenizers (``--cross-tokenizer auto``).
    """

    sets: tuple[str, ...] | str | None
    lam: float | None = None
    help: str = ""
    cd_weighting: str = "term-mean"
    options: tuple[tuple[str, Any], ...] = ()
    other_tokenizer: bool = False


_V1_ARMS: dict[str, Arm] = {
    "pre_kd": Arm(None, help="the student before distillation"),
    "kd": Arm((), help="plain distillation (lambda 1)"),
    "kd_extra": Arm("extra", help="KD with as many extra originals as LeaF adds counterfactuals (compute-matched)"),
    "kd_selected": Arm(("selected",), help="re-weighting: the analysed samples unpruned in the second term"),
    "leaf_instr": Arm(("gradient",), help="LeaF: gradient spans deleted (the paper's)"),
    "leaf_instr_resp": Arm(("gradient", "gradient_response"), help="instruction + response level deletion"),
    "leaf_random": Arm(("random",), help="random spans (same count) deleted"),
    "leaf_ppl": Arm(("ppl",), help="highest-surprisal spans deleted"),
    "leaf_oracle": Arm(("oracle",), help="ground-truth spans deleted"),
    "leaf_collective": Arm(("gradient_collective",), help="all gradient spans of a sample deleted at once"),
    "leaf_mask": Arm(("gradient_mask",), help="gradient spans masked"),
    "leaf_resample": Arm(("gradient_resample",), help="gradient spans resampled from the student (k = 1)"),
    "oracle_mask": Arm(("oracle_mask",), help="ground-truth spans masked"),
    "oracle_resample": Arm(("oracle_resample",), help="ground-truth spans resampled from the student"),
}

#: v2 arms run by default (well under 15 minutes on 2 cores); ``--full`` adds :data:`_V2_FULL`.
_V2_DEFAULT: dict[str, Arm] = {
    **{k: _V1_ARMS[k] for k in ("pre_kd", "kd", "kd_extra", "kd_selected", "leaf_instr", "leaf_mask",
                                "leaf_resample")},
    "leaf_resample_uniform": Arm(("gradient_resample_uniform",), help="gradient spans resampled uniformly "
                                                                      "over tokens of the same kind (k = 1)"),
    "leaf_delete_resample": Arm(("gradient", "gradient_resample"), help="deletion and resample records together"),
    **{k: _V1_ARMS[k] for k in ("leaf_random", "leaf_ppl", "leaf_oracle", "oracle_resample")},
    "leaf_resample_all": Arm(("all_resample",), help="resample with --select all (the best v2 arm, docs/findings.md)"),
}

_V2_FULL: dict[str, Arm] = {
    "leaf_resample_k3": Arm(("gradient_resample_k3",), help="resampled from the student, 3 draws per span"),
    "leaf_resample_teacher": Arm(("gradient_resample_teacher",), help="resampled from the teacher (k = 1)"),
    "leaf_resample_teacher_k3": Arm(("gradient_resample_teacher_k3",), help="resampled from the teacher, 3 draws"),
    "leaf_resample_uniform_k3": Arm(("gradient_resample_uniform_k3",), help="resampled uniformly, 3 draws"),
    **{k: _V1_ARMS[k] for k in ("leaf_instr_resp", "leaf_collective", "oracle_mask")},
    "leaf_instr_all": Arm(("all",), help="deletion with --select all (every pool sample analysed)"),
    "leaf_instr_verify_both": Arm(("gradient_verify_both",), help="deletion, records verified by both models "
                                                                  "(the paper's rule)"),
    "leaf_instr_unverified": Arm(("gradient_unverified",), help="deletion, records not verified"),
    "leaf_resample_all_token": Arm(("all_resample",), help="leaf_resample_all with --cd-weighting token (one mean "
                                                          "over all loss tokens)", cd_weighting="token"),
}

#: The loss and response variants of distillation: named with ``--arms`` only (each against ``kd``).
_V2_LOSSES: dict[str, Arm] = {
    "kd_reverse_kl": Arm((), help="KD with reverse KL", options=(("divergence", "reverse-kl"),)),
    "kd_jsd": Arm((), help="KD with generalized JSD, beta 0.5", options=(("divergence", "jsd"),)),
    "kd_skew_kl": Arm((), help="KD with skew forward KL, alpha 0.1", options=(("divergence", "skew-forward-kl"),)),
    "kd_tvd": Arm((), help="KD with total variation distance", options=(("divergence", "tvd"),)),
    "kd_on_policy": Arm((), help="KD, half the responses the student's own (sampled)",
                        options=(("student_responses", 0.5),)),
    "leaf_resample_all_on_policy": Arm(("all_resample",), help="leaf_resample_all, half the responses the "
                                       "student's own", options=(("student_responses", 0.5),)),
    "kd_other_tokenizer": Arm((), help="KD from a teacher with another tokenizer (trained as the teacher was)",
                              other_tokenizer=True),
    "leaf_resample_all_other_tokenizer": Arm(("all_resample",), help="leaf_resample_all from the teacher with "
                                             "another tokenizer", other_tokenizer=True),
}

#: The lambda sweep of ``--full``: these arms again at each of ``--sweep-lams``.
SWEEP_ARMS = ("kd_selected", "leaf_instr", "leaf_resample")


def arms_of(setting: str, full: bool, sweep_lams: list[float] | None = None) -> dict[str, Arm]:
    """The arms of a setting (v1: every arm of the first benchmark; v2: the default set, or everything with ``full``)."""
    if setting == "v1":
        return dict(_V1_ARMS)
    arms = {**_V2_DEFAULT, **(_V2_FULL if full else {})}
    if full:
        for lam in sweep_lams or ():
            for name in SWEEP_ARMS:
                arms[f"{name}@{lam:g}"] = replace(arms[name], lam=lam, help=f"{name} at lambda {lam:g}")
    return arms


#: Every arm name any setting knows (what ``--arms`` accepts).
ALL_ARMS: dict[str, Arm] = {**_V1_ARMS, **arms_of("v2", True, [0.2, 0.8]), **_V2_LOSSES}
#: Kept for callers of the v1 API: the v1 arms by name.
ARMS = _V1_ARMS

#: Arms whose attention on the planted spans is measured, per setting.
ATTENTION_ARMS = {"v1": ("pre_kd", "kd", "leaf_instr", "leaf_oracle", "leaf_resample"),
                  "v2": ("pre_kd", "kd", "kd_selected", "leaf_instr", "leaf_oracle", "leaf_resample")}
#: What every other arm is compared with in the paired tests.
REFERENCES = ("kd", "kd_selected")


@dataclass
class DemoConfig:
    """Options of ``leaf demo`` (CLI flags, YAML keys and API arguments alike)."""

    out: Path = option(Path("leaf-demo"), role="output", help="output folder (results.json, table.md, report.html, seed-*/)")
    setting: str = option("v2", choices=SETTINGS,
                          help="benchmark setting: v2 (three families incl. distractor sentences, a pool with clean "
                               "samples, a weaker student; docs/demo.md) or v1 (the first benchmark, kept reproducible)")
    quick: bool = option(False, help="smoke run: tiny models and sets, one seed (about a minute, plus a minute to build its models once)")
    full: bool = option(False, help="v2: every arm (resample sources and k = 3, select all, ...), a lambda sweep and "
                                    "5 seeds (about 30 minutes on 2 cores with the models cached; docs/findings.md)")
    seeds: int | None = option(None, help="number of seeds (default 3; --full 5; --quick 1)")
    n_train: int | None = option(None, help="distillation pool: problems per family (default 500; quick 80)")
    pool_clean_share: float | None = option(None, low=0.0, high=1.0,
                                            help="share of clean problems in the distillation pool (default: v2 0.5, "
                                                 "v1 0)")
    n_test: int | None = option(None, help="test problems per family and split (default 200; quick 25)")
    steps: int | None = option(None, help="optimiser steps of every distillation arm (default 200; quick 25)")
    batch_size: int = option(16, help="examples per optimiser step (every arm)")
    learning_rate: float = option(1e-3, help="peak learning rate of every arm (tiny models want more than 1e-5)")
    lam: float = option(0.5, help="lambda of the LeaF arms (weight of L_kd; 1 - lambda on L_cd)", aliases=["lambda"])
    sweep_lams: list[float] = option(default_factory=lambda: [0.2, 0.8],
                                     help=f"--full: lambdas of the sweep arms ({', '.join(SWEEP_ARMS)}), besides --lam")
    tau: float = option(DEFAULT_TAU, low=0.0, high=1.0, help="detection threshold on the normalised saliency difference")
    taus: list[float] = option(default_factory=lambda: [0.05, 0.10, 0.15, 0.20, 0.30],
                               help="thresholds at which detection quality is also reported")
    verify: str | None = option(None, choices=("none", "teacher", "both"),
                                help="keep a counterfactual record only if these models answer it correctly (leaf "
                                     "prune --verify): default v2 teacher, v1 none")
    select: str = option("student-wrong", choices=("student-wrong", "all"),
                         help="which pool samples are analysed (the paper: teacher right, student wrong)")
    arms: list[str] | None = option(None, help="arms to run (default: the setting's; docs/demo.md lists them)")
    attention: bool = option(True, help="measure attention on planted spans (leaf analyze)")
    report: bool = option(True, help="write the HTML report of the first seed")
    cache_dir: Path | None = option(None, help="where the trained tiny models are cached (default ~/.cache/leaf)")
    overwrite: bool = option(False, help="start over instead of resuming an existing --out")

    def validate(self) -> None:
        unknown = sorted(set(self.arms or ()) - set(ALL_ARMS))
        if unknown:
            raise ValueError(f"unknown arm(s) {', '.join(unknown)}; known: {', '.join(ALL_ARMS)}")
        if not 0.0 <= self.lam <= 1.0 or not all(0.0 <= v <= 1.0 for v in self.sweep_lams):
            raise ValueError("--lam and --sweep-lams must lie in [0, 1]")
        if self.full and self.setting == "v1":
            raise ValueError("--full is a v2 option (v1 runs all its arms already)")

    def resolved(self) -> DemoConfig:
        """Fill the size defaults of the chosen mode and setting."""
        quick, v2 = self.quick, self.setting == "v2"
        names = self.arms or list(arms_of(self.setting, self.full, self.sweep_lams))
        return replace(
            self,
            seeds=self.seeds or (1 if quick else 5 if self.full else 3),
            n_train=self.n_train or (80 if quick else 500),
            pool_clean_share=self.pool_clean_share if self.pool_clean_share is not None else (0.5 if v2 else 0.0),
            verify=self.verify or ("teacher" if v2 else "none"),
            n_test=self.n_test or (25 if quick else 200),
            steps=self.steps or (25 if quick else 200),
            arms=names,
        )

    def arm_specs(self) -> dict[str, Arm]:
        """The chosen arms by name, in run order."""
        specs = arms_of(self.setting, self.full, self.sweep_lams)
        return {name: specs.get(name) or ALL_ARMS[name] for name in self.arms or specs}
