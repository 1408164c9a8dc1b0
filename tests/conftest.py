"""Shared pytest set-up: the `slow` marker is skipped unless --runslow or PRUNEKIT_SLOW=1."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = config.getoption("--runslow") or os.environ.get("PRUNEKIT_SLOW") == "1"
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow or PRUNEKIT_SLOW=1")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)

# NOTE: set once, at import, so module-scoped fixtures see it too. Test tensors are tiny: one
# thread avoids oversubscribing CI's 2 cores (torchrun children and subprocesses set their own).
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Layer timings that round_to='auto' caches go to a folder of this session, never the user's home."""
    saved = os.environ.get("PRUNEKIT_CACHE_DIR")
    os.environ["PRUNEKIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("prunekit-cache"))
    yield
    if saved is None:
        os.environ.pop("PRUNEKIT_CACHE_DIR", None)
    else:
        os.environ["PRUNEKIT_CACHE_DIR"] = saved
