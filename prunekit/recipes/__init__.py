"""Declarative pruning recipes: a YAML file of ordered stages, validated, run with checkpoints.

``load_recipe(path)`` validates (errors name the file, line and field); ``run_recipe(recipe)``
executes the stages (train, prune, sparsify, gates, finetune, distill, decompose, evaluate,
export), each a single library call with the same option names.
"""

from prunekit.recipes.parse import load_recipe, parse_recipe
from prunekit.recipes.runner import run_recipe, validate
from prunekit.recipes.schema import STAGE_KINDS, Recipe
from prunekit.recipes.stages import STAGES, RunState

__all__ = ["Recipe", "STAGE_KINDS", "STAGES", "RunState", "load_recipe", "parse_recipe", "run_recipe",
           "validate"]
