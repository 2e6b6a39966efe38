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
Its options: :class:`leaf.demo.export.config.DemoDataConfig`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaf.config import Summary, make, to_dict
from leaf.data.jsonl import dumps, write_atomic
from leaf.demo.export.config import INFO, MODELS, DemoDataConfig


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
