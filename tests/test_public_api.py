"""The public surface: every name in every ``__all__`` exists (scikit-learn's import-consistency
check), the top level is small, listed in one place and lazy, and ``import prunekit`` pulls in no
optional heavy dependency."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import prunekit

MODULES = sorted(m.name for m in pkgutil.walk_packages(prunekit.__path__, "prunekit.")
                 if not m.name.endswith("__main__"))
HEAVY = ("torchvision", "transformers", "pydantic", "yaml", "onnx", "tensorly")


@pytest.mark.parametrize("name", ["prunekit", *MODULES])
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    for attr in getattr(module, "__all__", ()):
        assert hasattr(module, attr), f"{name}.__all__ lists '{attr}', which does not exist"


def test_top_level_api_is_small_and_documented() -> None:
    assert 15 <= len(prunekit.__all__) <= 30
    for attr in prunekit.__all__:
        assert getattr(prunekit, attr).__doc__, f"prunekit.{attr} has no docstring"


def test_all_is_the_lazy_mapping() -> None:
    assert sorted(prunekit.__all__) == sorted(prunekit._PUBLIC)


def test_dir_lists_the_surface() -> None:
    listed = dir(prunekit)
    assert set(prunekit.__all__) <= set(listed)
    assert "__version__" in listed
    assert "importlib" not in listed  # NOTE: only the surface, not the module's own helpers.


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        prunekit.nope  # noqa: B018


def test_subpackages_resolve_without_an_explicit_import() -> None:
    assert prunekit.measure.profile is prunekit.profile


def test_import_is_lazy() -> None:
    code = ("import prunekit, sys; print(sorted(m for m in " + repr(HEAVY) + " if m in sys.modules)); "
            "print(sorted(m for m in sys.modules if m.startswith('prunekit.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    heavy, loaded = out.splitlines()
    assert heavy == "[]", f"import prunekit loaded {heavy}"
    # NOTE: prunekit.version is the one-line module that holds __version__ for every layer.
    assert loaded == "['prunekit.version']", f"import prunekit loaded sub-packages {loaded}"
