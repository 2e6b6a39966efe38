"""``leaf demo-data``: the demo's models and one seed's data, as files a recipe (or any stage) reads.

The demo (:mod:`leaf.demo.pipeline`) builds its own tokenizer, teacher and
student and draws its own pool and test sets; this module writes exactly those
into one folder, so that ``leaf run configs/recipes/demo.yaml`` runs the demo's
main comparison through the ordinary stages (docs/recipes.md):

* ``tokenizer/``, ``teacher/``, ``student/`` -- copies of the models of
  :func:`leaf.demo.models.build` for the setting (trained once, then reused
  from the cache; each folder loads with ``leaf.models.load_model``);
* ``pool.jsonl`` -- the distillation pool of seed ``S``:
  ``pool_mix(families, n_train, clean_share, seed=100 * (S + 1) + 1)``;
* ``test_<split>.jsonl`` -- the held-out sets, split = confounded,
  counterfactual, clean: ``generate_mix(families, split, n_test, seed=100 * (S + 1) + 3)``;
* ``demo_data.json`` -- the settings, the sizes and where the models came from.

The draws are those of :func:`leaf.demo.pipeline.run_seed` (the same functions,
imported), and the size defaults those of ``leaf demo`` (:class:`leaf.demo.config.DemoConfig`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaf.config import Summary, make, option, to_dict
from leaf.data.jsonl import dumps, write_atomic
from leaf.demo.config import SETTINGS, SPLITS, DemoConfig

#: What a demo-data folder holds (the recipe runner fills these paths into the stages after it).
SAMPLES = "pool.jsonl"
MODELS = ("tokenizer", "teacher", "student")
INFO = "demo_data.json"


def split_file(split: str) -> str:
    return f"test_{split}.jsonl"


@dataclass
class DemoDataConfig:
    """Options of ``leaf demo-data`` (the recipe stage kind ``demo-data``): the demo's models and one seed's data."""

    out: Path = option(role="output",  # noqa: RUF009 - option() is a dataclasses.field
                       help="output folder: tokenizer/, teacher/, student/, pool.jsonl, test_<split>.jsonl, "
                            "demo_data.json")
    setting: str = option("v2", choices=SETTINGS, help="benchmark setting of leaf demo (its models and families)")
    quick: bool = option(False, help="leaf demo --quick: its smaller models and sets (n_train 80, n_test 25)")
    seed: int = option(0, low=0, help="the demo's seed index S: pool seed 100 (S + 1) + 1, test seed "
                                      "100 (S + 1) + 3 (as seed S of leaf demo)")
    n_train: int | None = option(None, low=1, help="pool: problems per family (default: leaf demo's, 500; quick 80)")
    pool_clean_share: float | None = option(None, low=0.0, high=1.0,
                                            help="share of clean problems in the pool (default: leaf demo's, v2 0.5, "
                                                 "v1 0)")
    n_test: int | None = option(None, low=1, help="test problems per family and split (default: leaf demo's, 200; "
                                                  "quick 25)")
    cache_dir: Path | None = option(None,  # noqa: RUF009 - option() is a dataclasses.field
                                    help="where the trained tiny models are cached (default $LEAF_CACHE/demo, else "
                                         "~/.cache/leaf/demo)")

    def resolved(self) -> DemoConfig:
        """The sizes as ``leaf demo`` resolves them for these settings."""
        return DemoConfig(setting=self.setting, quick=self.quick, n_train=self.n_train, n_test=self.n_test,
                          pool_clean_share=self.pool_clean_share, seeds=1).resolved()

    def models_config(self) -> Any:
        from leaf.demo.models import models_config

        return models_config(self.setting, quick=self.quick)

    def models_root(self) -> Path:
        """Where :func:`leaf.demo.models.build` keeps (or will keep) these models; nothing is built."""
        from leaf.demo.models import default_cache_dir

        return Path(self.cache_dir or default_cache_dir()) / self.models_config().key()

    def model_config(self, role: str) -> dict[str, Any]:
        """The ``config.json`` fields of the teacher or student before it is built (for a dry run's sizes)."""
        spec = getattr(self.models_config(), role)
        return {"model_type": "llama", "vocab_size": self.models_config().vocab_size, "hidden_size": spec.hidden_size,
                "intermediate_size": 4 * spec.hidden_size, "num_hidden_layers": spec.num_layers,
                "num_attention_heads": spec.num_heads, "num_key_value_heads": spec.num_heads,
                "tie_word_embeddings": False}  # as leaf.demo.models.build_model_for builds them

    def draw(self) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """``(pool, {split: test records})`` of this seed, exactly as ``leaf.demo.pipeline.run_seed`` draws them."""
        from leaf.demo.pipeline import pool_mix
        from leaf.demo.tasks import generate_mix

        sizes = self.resolved()
        assert sizes.n_train and sizes.n_test
        families = tuple(self.models_config().families)
        base = 100 * (self.seed + 1)
        pool = pool_mix(families, sizes.n_train, sizes.pool_clean_share or 0.0, seed=base + 1)
        tests = {split: generate_mix(families, split, sizes.n_test, seed=base + 3) for split in SPLITS}
        return pool, tests

    @staticmethod
    def paths(folder: str | Path) -> dict[str, Any]:
        """The files a demo-data folder holds: ``samples``, ``tokenizer``, ``teacher``, ``student``, ``tests``."""
        folder = Path(folder)
        return {"samples": folder / SAMPLES, **{m: folder / m for m in MODELS},
                "tests": {split: folder / split_file(split) for split in SPLITS}}


@dataclass
class DemoDataSummary(Summary):
    """What ``leaf demo-data`` wrote."""

    out: Path
    samples: int  #: records in pool.jsonl
    tests: dict[str, int] = field(default_factory=dict)
    families: list[str] = field(default_factory=list)
    models: str = ""  #: the cache folder the models were copied from
    cached: bool = False

    def line(self) -> str:
        tests = ", ".join(f"{s} {n}" for s, n in self.tests.items())
        return (f"wrote {self.out}: pool {self.samples} samples ({', '.join(self.families)}), tests {tests}; "
                f"tokenizer/teacher/student from {self.models} ({'cached' if self.cached else 'built'})")


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    write_atomic(path, "".join(dumps(r) + "\n" for r in records))


def demo_data(config: DemoDataConfig | None = None, **kwargs: Any) -> DemoDataSummary:
    """Build (or reuse) the demo's models, copy them into ``out`` and write one seed's pool and test sets."""
    from leaf.demo.models import build

    cfg = make(DemoDataConfig, config, kwargs, "leaf.demo.export.demo_data()")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out}: exists and is not a folder")
    models = build(cfg.models_config(), cache_dir=cfg.cache_dir, log=lambda msg: print(msg, flush=True))
    out.mkdir(parents=True, exist_ok=True)
    paths = cfg.paths(out)
    for name in MODELS:
        shutil.rmtree(paths[name], ignore_errors=True)
        shutil.copytree(models.root / name, paths[name])
    pool, tests = cfg.draw()
    for split, records in tests.items():
        _write_jsonl(paths["tests"][split], records)
    _write_jsonl(paths["samples"], pool)
    sizes = cfg.resolved()
    info = {"config": json.loads(dumps(to_dict(cfg))), "families": list(models.config.families),
            "n_train": sizes.n_train, "n_test": sizes.n_test, "pool_clean_share": sizes.pool_clean_share,
            "pool_seed": 100 * (cfg.seed + 1) + 1, "test_seed": 100 * (cfg.seed + 1) + 3,
            "models": str(models.root), "models_key": models.config.key(), "cached": models.cached,
            "samples": len(pool), "tests": {s: len(r) for s, r in tests.items()}}
    write_atomic(out / INFO, json.dumps(info, indent=2) + "\n")
    return DemoDataSummary(out, len(pool), info["tests"], info["families"], str(models.root), models.cached)


__all__ = ["DemoDataConfig", "DemoDataSummary", "demo_data"]
