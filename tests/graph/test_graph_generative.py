"""Generative models as users write them: a diffusion U-Net's attention (``qkv.reshape(B, 3, C, H * W)``
with ``C`` read from the input) and a VQ-VAE's codebook compared with ``cdist`` (an inexact cut: the
nearest code may change, so verification checks its shapes and the exact groups' values)."""

from __future__ import annotations

import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.measure import count_macs
from prunekit.structured import allocate, apply


class AttnBlock(nn.Module):
    def __init__(self, c: int = 32) -> None:
        super().__init__()
        self.norm, self.qkv, self.proj = nn.GroupNorm(8, c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)
        a = torch.softmax(torch.einsum("bci,bcj->bij", q, k) * 0.25, -1)
        return x + self.proj(torch.einsum("bij,bcj->bci", a, v).reshape(B, C, H, W))


class VQ(nn.Module):
    def __init__(self, d: int = 16, codes: int = 24) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, d, 3, padding=1))
        self.codebook = nn.Embedding(codes, d)
        self.dec = nn.Sequential(nn.Conv2d(d, 32, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.enc(x)
        B, D, H, W = z.shape
        idx = torch.cdist(z.permute(0, 2, 3, 1).reshape(-1, D), self.codebook.weight).argmin(1)
        return self.dec(self.codebook(idx).view(B, H, W, D).permute(0, 3, 1, 2))


def test_a_fused_qkv_viewed_as_three_parts_of_the_input_width_is_cut_per_part() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), AttnBlock(), nn.Conv2d(32, 4, 1)).eval()
    x = torch.randn(2, 3, 6, 6)
    graph = DependencyGraph.trace(model, x)
    qkv = [g for g in graph.groups if "1.qkv.weight" in {m.tensor for m in g.members}]
    assert qkv and all(g.prunable for g in qkv)
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    pruned = apply(model, graph, plan, example_inputs=x)  # verified
    assert pruned[1].qkv.out_channels == 3 * pruned[1].proj.out_channels == 3 * 16


def test_a_codebook_compared_by_cdist_is_cut_with_the_encoder() -> None:
    torch.manual_seed(0)
    model, x = VQ().eval(), torch.randn(2, 1, 8, 8)
    graph = DependencyGraph.trace(model, x)
    code = next(g for g in graph.groups if ("codebook.weight", 1) in {(m.tensor, m.axis) for m in g.members})
    assert code.prunable and not code.exact and "enc.2.weight" in {m.tensor for m in code.members}
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    pruned = apply(model, graph, plan, example_inputs=x)  # verified
    assert pruned.codebook.weight.shape == (24, 8) and pruned.enc[2].out_channels == 8
    assert count_macs(pruned, x) < count_macs(model, x)
    assert pruned(torch.randn(3, 1, 6, 10)).shape == (3, 1, 6, 10)
