"""save_pretrained / from_pretrained of pruned Hugging Face models, uniform and per-layer widths."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from prunekit.errors import DataNotFoundError
from prunekit.graph import DependencyGraph
from prunekit.hf import LAYOUT_FILE, from_pretrained, save_pretrained
from prunekit.importance import random
from prunekit.structured import allocate, apply

transformers = pytest.importorskip("transformers")

import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "graph"))
from _attention_models import bert, llama, tokens  # noqa: E402


def _heads(graph: DependencyGraph) -> list:  # type: ignore[type-arg]
    return [g for g in graph.prunable if any(m.inner > 1 and m.role == "producer" for m in g.members)]


def _prune(model: torch.nn.Module, *, uniform: bool) -> torch.nn.Module:
    x = tokens()
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    if not uniform:  # layer 0 keeps all its heads, layer 1 loses half: widths differ by layer
        first = _heads(graph)[0]
        plan = type(plan)(keep={**plan.keep, first.id: tuple(range(first.size))}, sizes=plan.sizes, meta=plan.meta)
    return apply(model, graph, plan, example_inputs=x)


def _hidden(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens(1)).last_hidden_state


@pytest.mark.parametrize("factory", [bert, llama])
def test_per_layer_widths_round_trip(factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pruned = _prune(factory().eval(), uniform=False)
    assert pruned.config.prunekit_layer_widths  # the config alone cannot describe this model
    save_pretrained(pruned, tmp_path / "m")
    model_class = functools.partial(transformers.BertModel, add_pooling_layer=False) if factory is bert else None
    loaded = from_pretrained(tmp_path / "m", model_class)
    assert type(loaded) is type(pruned)
    want = pruned.state_dict()
    assert list(loaded.state_dict()) == list(want)
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, want[name]), name
    # NOTE: the reloaded config may pick another attention kernel (eager vs sdpa): float-close only.
    torch.testing.assert_close(_hidden(loaded), _hidden(pruned), rtol=1e-4, atol=1e-5)


def test_per_layer_widths_refused_by_plain_from_pretrained(tmp_path: Path) -> None:
    pruned = _prune(llama().eval(), uniform=False)
    save_pretrained(pruned, tmp_path / "m")
    with pytest.raises(Exception, match="(?i)size|shape"):
        transformers.LlamaModel.from_pretrained(tmp_path / "m", local_files_only=True)


def test_uniform_widths_load_with_the_library_itself(tmp_path: Path) -> None:
    pruned = _prune(llama().eval(), uniform=True)
    assert not pruned.config.prunekit_layer_widths
    assert pruned.config.num_attention_heads == 2 and pruned.config.num_key_value_heads == 1
    save_pretrained(pruned, tmp_path / "m")
    plain = transformers.LlamaModel.from_pretrained(tmp_path / "m", local_files_only=True).eval()
    torch.testing.assert_close(_hidden(plain), _hidden(pruned), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(_hidden(from_pretrained(tmp_path / "m")), _hidden(pruned), rtol=1e-4, atol=1e-5)


def test_missing_layout_is_a_clear_error(tmp_path: Path) -> None:
    llama().save_pretrained(tmp_path / "plain")
    with pytest.raises(DataNotFoundError, match=LAYOUT_FILE):
        from_pretrained(tmp_path / "plain")
