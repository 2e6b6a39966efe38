"""Options of ``leaf demo-data`` (the recipe stage kind ``demo-data``) and the files it writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leaf.config import option
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


__all__ = ["INFO", "MODELS", "SAMPLES", "DemoDataConfig", "split_file"]
