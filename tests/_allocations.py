"""What a block of torch code allocates, for tests that bound its memory without timing or RSS.

Importable as ``_allocations`` from any test: the root conftest puts ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LargestNew(TorchDispatchMode):
    """The most elements of any tensor an op creates in new memory (views and aliases of its
    inputs, ``detach`` and ``reshape``, are not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.most = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        given = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in given:
                self.most = max(self.most, t.numel())
        return out
