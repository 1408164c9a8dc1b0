"""Tiny attention models: nn.MultiheadAttention, torchvision ViT and Swin, Hugging Face BERT and Llama.

Hugging Face models are built from configs (random weights); nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class MHABlock(nn.Module):
    """Pre-norm residual block around ``nn.MultiheadAttention`` (batch_first) plus an MLP."""

    def __init__(self, batch_first: bool = True, kdim: int | None = None) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.embed = nn.Linear(6, 16)
        self.kv = nn.Linear(6, kdim) if kdim else None
        self.attn = nn.MultiheadAttention(16, 4, batch_first=batch_first, kdim=kdim, vdim=kdim)
        self.up = nn.Linear(16, 24)
        self.down = nn.Linear(24, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        kv = self.kv(x) if self.kv is not None else h
        if not self.batch_first:
            h, kv = h.transpose(0, 1), kv.transpose(0, 1)
        a = self.attn(h, kv, kv, need_weights=False)[0]
        if not self.batch_first:
            a, h = a.transpose(0, 1), h.transpose(0, 1)
        h = h + a
        h = h + self.down(F.gelu(self.up(h)))
        return self.head(h.mean(1))


class QKVHeads(nn.Module):
    """Hand-written attention: fused qkv viewed as (3, H, d), scaled_dot_product_attention, proj."""

    def __init__(self, dim: int = 16, heads: int = 4, constant_heads: bool = False) -> None:
        super().__init__()
        self.heads = heads if constant_heads else -1
        self.head_dim = dim // heads  # NOTE: the head count is -1 (derived) unless constant_heads stores it
        self.embed = nn.Linear(5, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        b, n, c = h.shape
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        return self.head((h + self.proj(o)).mean(1))


def vit() -> nn.Module:
    import torchvision

    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                hidden_dim=32, mlp_dim=64, num_classes=5)


def swin() -> nn.Module:
    import torchvision

    return torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=24, depths=[2, 2], num_heads=[2, 4],
                                              window_size=[4, 4], num_classes=5)


def bert(attn: str = "eager") -> nn.Module:
    import transformers

    config = transformers.BertConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                     num_hidden_layers=2, vocab_size=100, max_position_embeddings=32,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                     attn_implementation=attn)
    return transformers.BertModel(config, add_pooling_layer=False)


def llama(attn: str = "eager") -> nn.Module:
    import transformers

    config = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                      intermediate_size=128, num_hidden_layers=2, vocab_size=100,
                                      max_position_embeddings=32, attn_implementation=attn)
    return transformers.LlamaModel(config)


def tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(seed))


def image(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def sequence(seed: int = 0, features: int = 6) -> torch.Tensor:
    return torch.randn(2, 5, features, generator=torch.Generator().manual_seed(seed))


# name -> (factory, example input); every model here prunes its heads exactly
MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[int], Any]]] = {
    "mha": (MHABlock, sequence),
    "mha_seq_first_kdim": (lambda: MHABlock(batch_first=False, kdim=10), sequence),
    "qkv_sdpa": (QKVHeads, lambda seed: sequence(seed, 5)),
    "vit": (vit, image),
    "swin": (swin, image),
    "bert_eager": (lambda: bert("eager"), tokens),
    "bert_sdpa": (lambda: bert("sdpa"), tokens),
    "llama_eager": (lambda: llama("eager"), tokens),
    "llama_sdpa": (lambda: llama("sdpa"), tokens),
}
