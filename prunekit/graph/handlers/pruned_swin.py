"""``PrunedShiftedWindowAttention``: torchvision's Swin window attention (v1 or v2) whose inner width
(``num_heads * head_dim``) may differ from its channel count C.

torchvision's forward takes ``head_dim = C // num_heads``, so it cannot hold fewer heads than C
allows, nor a pruned C with all heads. The refresh of a sliced ``ShiftedWindowAttention`` builds this
class from it: the same parameters, buffers and submodules under the same names (same state_dict),
and a forward that keeps the two widths apart. prunekit never imports torchvision for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PrunedShiftedWindowAttention"]


class PrunedShiftedWindowAttention(nn.Module):
    """Shifted-window attention with ``num_heads`` heads of ``qkv.out_features // 3 // num_heads``
    channels each, over ``qkv.in_features`` input channels (v2 when it holds ``logit_scale``)."""

    def __init__(self, qkv: nn.Linear, proj: nn.Linear, *, window_size: Sequence[int], shift_size: Sequence[int],
                 num_heads: int, attention_dropout: float = 0.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.window_size, self.shift_size = list(window_size), list(shift_size)
        self.num_heads, self.attention_dropout, self.dropout = num_heads, attention_dropout, dropout
        self.qkv, self.proj = qkv, proj

    @classmethod
    def from_module(cls, attention: Any) -> PrunedShiftedWindowAttention:
        """This class holding ``attention``'s tensors and submodules (shared, not copied) and settings."""
        new = cls(attention.qkv, attention.proj, window_size=attention.window_size,
                  shift_size=attention.shift_size, num_heads=attention.num_heads,
                  attention_dropout=attention.attention_dropout, dropout=attention.dropout)
        for name, param in attention._parameters.items():
            new.register_parameter(name, param)
        for name, buffer in attention._buffers.items():
            new.register_buffer(name, buffer, persistent=name not in attention._non_persistent_buffers_set)
        for name, module in attention._modules.items():
            new.add_module(name, module)
        return new.train(attention.training)

    def get_relative_position_bias(self) -> torch.Tensor:
        """The (1, heads, N, N) bias of every pair of window positions (as torchvision, v1 or v2)."""
        n = self.window_size[0] * self.window_size[1]
        own: Any = self  # NOTE: the tables are adopted from the torchvision module by name
        v2 = hasattr(own, "cpb_mlp")
        table = own.cpb_mlp(own.relative_coords_table).view(-1, self.num_heads) if v2 \
            else own.relative_position_bias_table
        bias = table[own.relative_position_index].view(n, n, -1).permute(2, 0, 1).contiguous().unsqueeze(0)
        return 16 * torch.sigmoid(bias) if v2 else bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """torchvision's ``shifted_window_attention`` with the inner width apart from C."""
        b, h, w, _ = x.shape
        ws = self.window_size
        x = F.pad(x, (0, 0, 0, (ws[1] - w % ws[1]) % ws[1], 0, (ws[0] - h % ws[0]) % ws[0]))
        _, ph, pw, c = x.shape
        shift = [0 if ws[i] >= (ph, pw)[i] else self.shift_size[i] for i in range(2)]
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = (ph // ws[0]) * (pw // ws[1])
        x = x.view(b, ph // ws[0], ws[0], pw // ws[1], ws[1], c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(b * windows, ws[0] * ws[1], c)
        x = self._attend(x, _shift_mask(x, ph, pw, ws, shift) if sum(shift) > 0 else None, windows)
        c = x.shape[-1]
        x = x.view(b, ph // ws[0], pw // ws[1], ws[0], ws[1], c).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
        return x[:, :h, :w, :].contiguous()

    def _attend(self, x: torch.Tensor, mask: torch.Tensor | None, windows: int) -> torch.Tensor:
        """Attention inside each window of ``x`` (windows * B, N, C) -> (windows * B, N, C_out)."""
        logit_scale, qkv_bias = getattr(self, "logit_scale", None), self.qkv.bias
        bias: torch.Tensor | None = qkv_bias
        inner = self.qkv.weight.shape[0] // 3
        heads, n = self.num_heads, x.size(1)
        if logit_scale is not None and qkv_bias is not None:
            bias = torch.cat([qkv_bias[:inner], torch.zeros_like(qkv_bias[inner:2 * inner]), qkv_bias[2 * inner:]])
        qkv = F.linear(x, self.qkv.weight, bias).reshape(x.size(0), n, 3, heads, inner // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        if logit_scale is not None:
            attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
            attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
        else:
            attn = (q * (inner // heads) ** -0.5).matmul(k.transpose(-2, -1))
        attn = attn + self.get_relative_position_bias()
        if mask is not None:
            attn = (attn.view(-1, windows, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, n, n)
        attn = F.dropout(F.softmax(attn, dim=-1), p=self.attention_dropout, training=self.training)
        x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), n, inner)
        return F.dropout(F.linear(x, self.proj.weight, self.proj.bias), p=self.dropout, training=self.training)


def _shift_mask(x: torch.Tensor, ph: int, pw: int, ws: list[int], shift: list[int]) -> torch.Tensor:
    """Swin's mask between positions that the cyclic shift brought into one window (as torchvision)."""
    mask = x.new_zeros((ph, pw))
    count = 0
    for hs in ((0, -ws[0]), (-ws[0], -shift[0]), (-shift[0], None)):
        for wsl in ((0, -ws[1]), (-ws[1], -shift[1]), (-shift[1], None)):
            mask[hs[0]:hs[1], wsl[0]:wsl[1]] = count
            count += 1
    mask = mask.view(ph // ws[0], ws[0], pw // ws[1], ws[1]).permute(0, 2, 1, 3).reshape(-1, ws[0] * ws[1])
    mask = mask.unsqueeze(1) - mask.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
