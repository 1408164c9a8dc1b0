"""masked_scatter: image features placed at the image tokens share the text width's channels."""

from __future__ import annotations

import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import allocate, apply


class _ImageText(nn.Module):
    """LLaVA in small: projected image features replace the embeddings of the image tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.project = nn.Linear(8, 16)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))
        self.head = nn.Linear(16, 5)

    def forward(self, ids: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        mask = (ids == 19).unsqueeze(-1).expand_as(x)
        x = x.masked_scatter(mask, self.project(image))
        return self.head(x + self.mlp(x))


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[1, 19, 19, 19, 4, 5]])
    return ids, torch.randn(3, 8, generator=torch.Generator().manual_seed(0))


def test_masked_scatter_of_whole_rows_cuts_the_text_width() -> None:
    torch.manual_seed(0)
    model, x = _ImageText().eval(), _inputs()
    graph = DependencyGraph.trace(model, x)
    width = next(g for g in graph.groups if any(m.tensor == "embed.weight" and m.axis == 1 for m in g.members))
    assert width.prunable, width.reasons
    assert any(m.tensor == "project.weight" and m.axis == 0 for m in width.members)
    pruned = apply(model, graph, allocate(graph, score(graph, model, "l2"), 0.5), example_inputs=x)  # verified
    assert pruned.embed.weight.shape == (20, 8) and pruned.project.weight.shape == (8, 8)
    assert pruned(*x).shape == (1, 6, 5)


def test_masked_scatter_of_parts_of_rows_is_frozen() -> None:
    class Partial(_ImageText):
        def forward(self, ids: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
            x = self.embed(ids)
            mask = torch.zeros_like(x, dtype=torch.bool)
            mask[0, 1, :4] = True
            return self.head(x.masked_scatter(mask, self.project(image)))

    model = Partial().eval()
    graph = DependencyGraph.trace(model, _inputs())
    width = next(g for g in graph.groups if any(m.tensor == "embed.weight" and m.axis == 1 for m in g.members))
    assert not width.prunable
