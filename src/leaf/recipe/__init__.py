"""The recipe runner: ``leaf run RECIPE.yaml`` runs the stages a recipe lists into one run folder.

* :mod:`leaf.recipe.stages` -- the stage table and the path wiring between stages;
* :mod:`leaf.recipe.runner` -- running, skipping, resuming and refusing stages; ``--print``, ``--print-commands``;
* :mod:`leaf.recipe.estimate` -- the dry run: what each stage reads and writes, and what it will cost.

Recipes and their format: docs/recipes.md.
"""

from __future__ import annotations

from leaf.recipe.config import RecipeConfig
from leaf.recipe.runner import RunSummary, load_recipe, run_recipe

__all__ = ["RecipeConfig", "RunSummary", "load_recipe", "run_recipe"]
