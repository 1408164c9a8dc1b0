"""One vocabulary: a command's options become a stage with the recipe schema's own keys, and the
CLI spells the shared ideas one way (--importance, --method only for algorithms, --ignore)."""

from __future__ import annotations

import pytest

from prunekit.cli import build_parser
from prunekit.cli import decompose, prune, sparsify
from prunekit.recipes.schema import DecomposeStageOptions, PruneOptions, SparsifyOptions

_ARGS = {
    "prune": (prune.stage, PruneOptions, ["--target-macs", "0.5"]),
    "sparsify": (sparsify.stage, SparsifyOptions, []),
    "decompose": (decompose.stage, DecomposeStageOptions, ["--target-macs", "0.5"]),
}


@pytest.mark.parametrize("command", ["prune", "sparsify", "decompose"])
def test_a_commands_stage_is_a_valid_recipe_stage(command: str) -> None:
    to_stage, schema, extra = _ARGS[command]
    args = build_parser().parse_args([command, "--model", "simple_cnn", *extra])
    stage = {k: v for k, v in to_stage(args).items() if v is not None}
    assert set(stage) <= set(schema.model_fields), set(stage) - set(schema.model_fields)
    schema.model_validate(stage)


def test_no_command_takes_the_old_names() -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    flags = {flag for sub in commands.values() for action in sub._actions for flag in action.option_strings}
    assert {"--criterion", "--exclude", "--ignored-layers", "--example-input"} & flags == set()
    assert {"--importance", "--ignore", "--device", "--max-eval-batches"} <= flags
