"""Options of ``leaf demo`` and the arms it compares."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from leaf.config import option
from leaf.detect.decision import DEFAULT_TAU

SPLITS = ("confounded", "counterfactual", "clean")

#: Counterfactual sets: name -> (detection file stem, strategy, intervention).
CF_SETS: dict[str, tuple[str, str, str]] = {
    "gradient": ("det_gradient", "span", "delete"),
    "gradient_collective": ("det_gradient", "collective", "delete"),
    "gradient_response": ("det_gradient_response", "span", "delete"),
    "random": ("det_random", "span", "delete"),
    "ppl": ("det_ppl", "span", "delete"),
    "oracle": ("det_oracle", "span", "delete"),
    "gradient_mask": ("det_gradient", "span", "mask"),
    "gradient_resample": ("det_gradient", "span", "resample"),
    "oracle_mask": ("det_oracle", "span", "mask"),
    "oracle_resample": ("det_oracle", "span", "resample"),
    "selected": ("det_gradient", "span", "none"),
}

#: Arms: name -> counterfactual sets used (None: no training; "extra": compute-matched originals).
#: ``kd_selected`` puts the *unpruned* selected samples in the counterfactual term: it separates
#: what pruning does from what re-weighting the samples the student gets wrong does.
ARMS: dict[str, Any] = {
    "pre_kd": None,
    "kd": [],
    "kd_extra": "extra",
    "kd_selected": ["selected"],
    "leaf_instr": ["gradient"],
    "leaf_instr_resp": ["gradient", "gradient_response"],
    "leaf_random": ["random"],
    "leaf_ppl": ["ppl"],
    "leaf_oracle": ["oracle"],
    "leaf_collective": ["gradient_collective"],
    "leaf_mask": ["gradient_mask"],
    "leaf_resample": ["gradient_resample"],
    "oracle_mask": ["oracle_mask"],
    "oracle_resample": ["oracle_resample"],
}

ATTENTION_ARMS = ("pre_kd", "kd", "leaf_instr", "leaf_oracle", "leaf_resample")


@dataclass
class DemoConfig:
    """Options of ``leaf demo`` (CLI flags, YAML keys and API arguments alike)."""

    out: Path = option(Path("leaf-demo"), role="output", help="output folder (results.json, table.md, report.html, seed-*/)")
    quick: bool = option(False, help="smoke run: tiny models and sets, one seed (about 25 s, plus 30 s to build its models once)")
    seeds: int | None = option(None, help="number of seeds (default 3; --quick: 1)")
    n_train: int | None = option(None, help="distillation pool: problems per family (default 500; quick 80)")
    n_test: int | None = option(None, help="test problems per family and split (default 200; quick 25)")
    steps: int | None = option(None, help="optimiser steps of every distillation arm (default 200; quick 25)")
    batch_size: int = option(16, help="examples per optimiser step (every arm)")
    learning_rate: float = option(1e-3, help="peak learning rate of every arm (tiny models want more than 1e-5)")
    lam: float = option(0.5, help="lambda of the LeaF arms (weight of L_kd; 1 - lambda on L_cd)", aliases=["lambda"])
    tau: float = option(DEFAULT_TAU, low=0.0, high=1.0, help="detection threshold on the normalised saliency difference")
    taus: list[float] = option(default_factory=lambda: [0.05, 0.10, 0.15, 0.20, 0.30],
                               help="thresholds at which detection quality is also reported")
    select: str = option("student-wrong", choices=("student-wrong", "all"),
                         help="which pool samples are analysed (the paper: teacher right, student wrong)")
    arms: list[str] | None = option(None, help=f"arms to run (default: all of {', '.join(ARMS)})")
    attention: bool = option(True, help="measure attention on planted spans (leaf analyze)")
    report: bool = option(True, help="write the HTML report of the first seed")
    cache_dir: Path | None = option(None, help="where the trained tiny models are cached (default ~/.cache/leaf)")
    overwrite: bool = option(False, help="start over instead of resuming an existing --out")

    def validate(self) -> None:
        unknown = sorted(set(self.arms or ()) - set(ARMS))
        if unknown:
            raise ValueError(f"unknown arm(s) {', '.join(unknown)}; known: {', '.join(ARMS)}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError("--lam must lie in [0, 1]")

    def resolved(self) -> DemoConfig:
        """Fill the size defaults of the chosen mode."""
        quick = self.quick
        return replace(
            self,
            seeds=self.seeds or (1 if quick else 3),
            n_train=self.n_train or (80 if quick else 500),
            n_test=self.n_test or (25 if quick else 200),
            steps=self.steps or (25 if quick else 200),
            arms=self.arms or list(ARMS),
        )
