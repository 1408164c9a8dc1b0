"""``prunekit.save(model, folder, source="my_model.py:build")`` of a model the user built with
``from my_model import build``: the spec runs the file again under prunekit's own module name, so its
classes are other objects of the same name from the same file, which are one class to the layout."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from _io_helpers import assert_same, pruned

import prunekit
from prunekit.errors import ConfigError

_NET = '''
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x):
        return self.b(self.a(x).relu())


def build():
    return Net()
'''


@pytest.fixture
def imported(tmp_path: Path) -> Iterator[tuple[Path, ModuleType]]:
    """``my_model.py`` in ``tmp_path``, imported as the user's own module ``my_model_<test>``."""
    file = tmp_path / "my_model.py"
    file.write_text(_NET)
    name = f"my_model_{abs(hash(str(tmp_path)))}"
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield file, module
    del sys.modules[name]


def test_a_model_imported_from_its_file_saves_against_that_files_spec(
        imported: tuple[Path, ModuleType], tmp_path: Path) -> None:
    file, module = imported
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    small, plan = pruned(module.build().eval(), x)
    folder = prunekit.save(small, tmp_path / "out", source=f"{file}:build", transforms=[plan])
    loaded = prunekit.load(folder)
    assert type(loaded).__name__ == "Net" and type(loaded) is not module.Net  # NOTE: rebuilt from the file
    assert loaded.a.out_channels == 8
    assert_same(loaded, small, x)


def test_another_class_of_the_same_name_is_refused_with_its_full_name(
        imported: tuple[Path, ModuleType], tmp_path: Path) -> None:
    file, module = imported
    other = tmp_path / "other" / "my_model.py"
    other.parent.mkdir()
    other.write_text(_NET)
    with pytest.raises(ConfigError, match=r"save: the model is a my_model_\d+\.Net but the original architecture "
                                          r"has a prunekit_user_my_model_\w+\.Net there"):
        prunekit.save(module.build(), tmp_path / "out", source=f"{other}:build")
