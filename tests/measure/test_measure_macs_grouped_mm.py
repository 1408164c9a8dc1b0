"""MACs of ``torch._grouped_mm``, the kernel transformers' mixture-of-experts layers run by default:
counted as the matmul over the rows the groups cover, so a MoE model counts the same whichever
experts implementation its config names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.measure import count_macs

pytestmark = pytest.mark.skipif(not hasattr(torch, "_grouped_mm"), reason="torch has no _grouped_mm")


class _Experts(nn.Module):
    """Rows of ``x`` sorted by expert; ``offs`` ends each expert's rows (the last rows are not routed)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 8, 4))
        self.register_buffer("offs", torch.tensor([3, 7, 9], dtype=torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch._grouped_mm(x, self.weight, offs=self.offs)


def test_grouped_rows_count_one_matmul_over_the_rows_the_groups_cover() -> None:
    assert count_macs(_Experts(), torch.randn(10, 8)) == 9 * 8 * 4


def test_a_mixtral_counts_the_same_with_grouped_mm_and_eager_experts() -> None:
    transformers = pytest.importorskip("transformers")

    def build(implementation: str) -> nn.Module:
        config = transformers.MixtralConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                            intermediate_size=64, num_hidden_layers=1, vocab_size=50,
                                            num_local_experts=4, max_position_embeddings=16)
        config._experts_implementation = implementation
        torch.manual_seed(0)
        return transformers.MixtralForCausalLM(config).eval()

    grouped = build("grouped_mm")
    assert grouped.config._experts_implementation == "grouped_mm"
    ids = torch.randint(1, 50, (2, 5), generator=torch.Generator().manual_seed(0))
    assert count_macs(grouped, ids) == count_macs(build("eager"), ids)
