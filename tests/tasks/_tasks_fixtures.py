"""Tiny models for the task tests: a token LM without transformers, and tiny transformers configs."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

VOCAB = 24


def seeded(build: Any, seed: int = 0) -> Any:
    """``build()`` with the global RNG forked and seeded, so weights are fixed and nothing leaks."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class TokenLM(nn.Module):
    """Embedding -> Linear: logits ``[B, T, V]`` from token ids, no loss of its own."""

    def __init__(self, vocab: int = VOCAB, width: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, vocab)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids))


class TokenEncoder(nn.Module):
    """Embedding -> Linear -> tanh: hidden states ``[B, T, H]``; takes an attention mask."""

    def __init__(self, vocab: int = VOCAB, width: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                ) -> torch.Tensor:
        return torch.tanh(self.mix(self.embed(input_ids)))


def tiny_gpt2(seed: int = 0) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                        eos_token_id=0)
    return seeded(lambda: GPT2LMHeadModel(config).eval(), seed)


def tiny_llama(seed: int = 0) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=16)
    return seeded(lambda: LlamaForCausalLM(config).eval(), seed)


def tiny_bert(seed: int = 0) -> nn.Module:
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return seeded(lambda: BertModel(config, add_pooling_layer=False).eval(), seed)


def token_batches(n: int = 3, batch: int = 4, length: int = 8, *, seed: int = 0,
                  padded: bool = True) -> list[dict[str, torch.Tensor]]:
    """Dict batches of random token ids; with ``padded`` the last two positions of row 0 are padding."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, VOCAB, (batch, length), generator=generator)
        mask = torch.ones_like(ids)
        if padded:
            mask[0, -2:] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out
