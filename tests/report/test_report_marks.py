"""The gallery and the head map mark exactly the channels and heads a hand-made plan removes, and
the attribution agreement is a rank correlation."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.report import collect_evidence
from prunekit.report import html as report_html
from prunekit.report.attribution import agreement
from prunekit.report.evidence import filter_gallery, head_map
from prunekit.structured import Plan, apply


class _Cnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(torch.relu(self.conv1(x))).mean((2, 3)))


class _Transformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.layers = nn.ModuleList([nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
                                     for _ in range(2)])
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h)
        return self.head(h.mean(1))


def _group_of(graph: DependencyGraph, tensor: str) -> str:
    return next(g.id for g in graph.groups for m in g.by_role("producer") if m.tensor == tensor and m.axis == 0)


def _marked(page: str, attributes: str) -> set[tuple[int, ...]]:
    """The attribute values of every element the page marks ``class="... removed"``."""
    found = set()
    for tag in re.findall(r'<[^>]*class="[^"]*\bremoved\b[^"]*"[^>]*>', page):
        found.add(tuple(int(v) for v in re.findall(attributes, tag)))
    return found


def test_the_gallery_marks_exactly_the_removed_filters() -> None:
    torch.manual_seed(0)
    model, x = _Cnn().eval(), torch.randn(1, 3, 8, 8)
    graph = DependencyGraph.trace(model, x)
    conv1 = _group_of(graph, "conv1.weight")
    plan = Plan(keep={conv1: (0, 2, 5)}, sizes={conv1: 6})
    gallery = filter_gallery(model, graph, plan)
    assert gallery is not None and gallery["layer"] == "conv1" and gallery["removed"] == [1, 3, 4]
    assert torch.tensor(gallery["filters"]).shape == (6, 3, 3, 3)  # NOTE: RGB filters: 3 input channels.
    figure = report_html.filter_gallery(gallery)
    assert _marked(figure.body, r'data-channel="(\d+)"') == {(1,), (3,), (4,)}
    assert figure.body.count('class="tile kept"') == 3 and "3 of 6 filters removed (1, 3, 4)" in figure.caption
    # The whole evidence record agrees with the pruned model the plan makes.
    pruned = apply(model, graph, plan, example_inputs=x)
    evidence = collect_evidence(model, pruned, example_inputs=x, plan=plan)
    assert evidence["gallery"]["removed"] == [1, 3, 4] and "heads" not in evidence
    assert {"layer": "conv1", "kind": "Conv2d", "before": 6, "after": 3} in evidence["widths"]


def test_the_head_map_marks_exactly_the_removed_heads() -> None:
    torch.manual_seed(0)
    model, x = _Transformer().eval(), torch.randn(1, 5, 8)
    graph = DependencyGraph.trace(model, x)
    first, second = (_group_of(graph, f"layers.{i}.self_attn.in_proj_weight") for i in range(2))
    plan = Plan(keep={first: (0, 2, 3), second: (1, 2)}, sizes={first: 4, second: 4})
    scores = {first: torch.tensor([4.0, 1.0, 3.0, 2.0]), second: torch.tensor([0.5, 2.0, 3.0, 0.1])}
    heads = head_map(graph, scores, plan)
    assert heads is not None
    assert heads["layers"] == ["layers.0.self_attn", "layers.1.self_attn"]
    assert heads["removed"] == [[0, 1], [1, 0], [1, 3]] and heads["importance"][1] == pytest.approx([0.5, 2.0, 3.0, 0.1])
    figure = report_html.head_map(heads)
    assert _marked(figure.body, r'data-(?:layer|head)="(\d+)"') == {(0, 1), (1, 0), (1, 3)}
    assert figure.body.count('class="kept"') == 5 and "3 of 8 heads removed" in figure.caption
    # NOTE: the head map is read from the model before and the plan; the pruned model is not needed.
    evidence = collect_evidence(model, model, example_inputs=x, plan=plan, scores=scores)
    assert evidence["heads"]["removed"] == [[0, 1], [1, 0], [1, 3]]


def test_agreement_is_spearmans_rank_correlation() -> None:
    a = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]])
    b = torch.tensor([[[10.0, 20.0], [30.0, 400.0]], [[4.0, 3.0], [2.0, 1.0]], [[1.0, 2.0], [3.0, 4.0]]])
    scores = agreement(a, b)
    assert scores[0] == pytest.approx(1.0) and scores[1] == pytest.approx(-1.0) and scores[2] is None


def test_attribution_is_grad_cam_on_the_last_conv_and_leaves_the_model_alone() -> None:
    torch.manual_seed(0)
    model = _Cnn().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    dataset = torch.utils.data.TensorDataset(images, labels)
    evidence = collect_evidence(model, model, dataset=dataset, num_classes=5)
    record = evidence["attribution"]
    assert record["method"] == "Grad-CAM on conv2" and torch.tensor(record["before"]).shape == (4, 8, 8)
    # NOTE: the same model twice: identical maps agree perfectly (or are constant, hence None).
    assert all(s is None or s == pytest.approx(1.0) for s in record["agreement"])
    assert sum(map(sum, evidence["classes"]["before"])) == 4
    assert model.training and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
