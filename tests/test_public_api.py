"""Every name in every ``__all__`` exists (scikit-learn's import-consistency check)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import prunekit

MODULES = sorted(m.name for m in pkgutil.walk_packages(prunekit.__path__, "prunekit.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", ["prunekit", *MODULES])
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    for attr in getattr(module, "__all__", ()):
        assert hasattr(module, attr), f"{name}.__all__ lists '{attr}', which does not exist"


def test_top_level_api_is_small_and_documented() -> None:
    assert 15 <= len(prunekit.__all__) <= 30
    for attr in prunekit.__all__:
        assert getattr(prunekit, attr).__doc__, f"prunekit.{attr} has no docstring"
