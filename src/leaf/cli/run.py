"""``leaf run RECIPE.yaml``: run the stages a recipe lists, in order, into one run folder.

``--dry-run`` estimates every stage without loading a model; ``--print`` shows the
resolved recipe; ``--print-commands`` the launch command of each stage (accelerate
launch for distillation across GPUs). Recipes: docs/recipes.md.

The recipe file is a positional argument (the only command that has one), so
this module declares its flags itself, one per field of ``RecipeConfig``; the
on/off options are plain switches, so that ``leaf run --dry-run RECIPE.yaml``
reads as well as ``leaf run RECIPE.yaml --dry-run``.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leaf.cli import Command, load_object


@dataclasses.dataclass(frozen=True)
class RunCommand(Command):
    """``leaf run``: a positional recipe, then the options of ``RecipeConfig``."""

    def add_to(self, sub: Any, require: bool, argv: Sequence[str]) -> None:
        parser = sub.add_parser(self.name, help=self.help, description=self.help)
        if self.name not in argv:
            return
        cls = load_object(self.config)
        hints = typing.get_type_hints(cls)
        parser.add_argument("recipe", type=Path, nargs="?", default=None, metavar="RECIPE.yaml",
                            help="the recipe (docs/recipes.md)")
        parser.add_argument("--recipe", dest="recipe_flag", type=Path, default=None, help="the recipe, as a flag")
        for f in dataclasses.fields(cls):
            if f.name == "recipe":
                continue
            flags = ["--" + n.replace("_", "-") for n in (f.name, *f.metadata.get("aliases", ()))]
            kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": f.metadata["help"].replace("%", "%%")}
            tp = hints[f.name]
            if tp is bool:
                kwargs.update(action="store_const", const=True)
            elif typing.get_origin(tp) is list:
                kwargs.update(action="extend", nargs="+", metavar="KEY=VALUE")
            else:
                base = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
                kwargs["type"] = base[0]
                if f.metadata.get("choices"):
                    kwargs["choices"] = list(f.metadata["choices"])
            parser.add_argument(*flags, **kwargs)
        parser.set_defaults(_command=self)

    def __call__(self, args: argparse.Namespace) -> int:
        from leaf.config import ConfigError, build

        args.recipe = args.recipe or args.recipe_flag
        stray = [v for v in args.overrides or [] if "=" not in v]
        if args.recipe is None and len(stray) == 1:  # `leaf run --set k=v RECIPE.yaml`: --set took the recipe
            args.recipe, args.overrides = Path(stray[0]), [v for v in args.overrides if v != stray[0]]
        if args.recipe is None:
            raise ConfigError("give the recipe: leaf run RECIPE.yaml (see docs/recipes.md)")
        cls = load_object(self.config)
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
        summary = load_object(self.run)(build(cls, values, "command line"))
        print(summary.line())
        return 0


COMMAND = RunCommand(
    "run",
    "run the stages of a recipe (data, label, detect, prune, distill, evaluate, analyze, report) into one folder",
    config="leaf.recipe.config:RecipeConfig",
    run="leaf.recipe:run_recipe",
)
