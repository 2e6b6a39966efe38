"""Options of ``leaf run`` (the recipe runner): the flags, the YAML keys and the keyword arguments of ``run_recipe``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from leaf.config import ConfigError, option


@dataclass
class RecipeConfig:
    """Options of ``leaf run RECIPE.yaml`` (the recipe itself: docs/recipes.md)."""

    recipe: Path = option(role="input", help="the recipe YAML (run:, stages:, shared keys, one section per stage)")
    dry_run: bool = option(False, help="run nothing: print per stage what it reads and writes, its samples, tokens, "
                                       "FLOPs, memory and time per device (leaf.estimate)")
    print_recipe: bool = option(False, aliases=["print"], help="print the fully resolved recipe (YAML) and exit")
    print_commands: bool = option(False, help="print the launch command of each stage (accelerate launch for "
                                              "distill) for a cluster's job scripts, write RUN/stages/*.yaml, and exit")
    from_stage: str | None = option(None, aliases=["from"], help="redo this stage and every stage after it "
                                                                 "(their outputs are deleted first)")
    only: str | None = option(None, help="run only this stage (the stages it reads from must have finished)")
    until: str | None = option(None, help="stop after this stage")
    overrides: list[str] = option(default_factory=list, aliases=["set"],
                                  help="KEY=VALUE (a recipe key or shared key) or STAGE.KEY=VALUE (a stage option), "
                                       "the value read as YAML; repeat the flag")
    gpus: int | None = option(None, low=1, help="GPUs of the node the estimates and launch commands assume "
                                                "(default: the recipe's gpus, else 8)")
    gpu: str | None = option(None, choices=("H100", "H200", "A100"),
                             help="GPU of the estimates (default: the recipe's gpu, else H100)")

    def validate(self) -> None:
        if self.only and (self.from_stage or self.until):
            raise ConfigError("--only runs one stage; it does not combine with --from / --until")
        for item in self.overrides:
            if "=" not in item or not item.split("=", 1)[0].strip():
                raise ConfigError(f"--set {item!r}: expected KEY=VALUE or STAGE.KEY=VALUE")


__all__ = ["RecipeConfig"]
