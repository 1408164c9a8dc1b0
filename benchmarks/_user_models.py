"""Models written the way people write their own (for benchmarks/coverage_user.py).

Each is a small, plain ``nn.Module`` in the style of a well-known code base or tutorial, with the
constructs such code uses: stored head counts and split sizes, fused q|k|v, complex rotary
embeddings, grouped-query attention, recurrent layers, gated units, sub-pixel convolution, bags of
embeddings, skip connections by concatenation; and a second set with torch's own transformer layers,
top-k routing with ``index_add_``, einsum attention, a channel shuffle, two inputs, an edge list and a
dict output; a third with attention gates, a feature pyramid, concatenation in a loop, a ConvLSTM,
token mixing, weights tied into transposed convs and a predicted feature transform; a fourth with a
text CNN, MBConv, a spatial transformer, a VAE, WaveNet, a deformable conv, Swin written out, a dual
encoder, DLRM, raw-parameter layers, nn.Unflatten, a temporal shift, GhostNet, MixConv and an
orthogonal parametrization; a fifth with attention written BLOOM-, fairseq- and Annotated-Transformer
style, packed sequences, a diffusion U-Net, a VQ-VAE, a batch dict input, a TorchScript submodule
and BiFPN fusion. ``ZOO`` maps a name to (builder, example input, another input of other
sizes the pruned model must also take).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class GPT(nn.Module):
    """nanoGPT's shape: fused c_attn split at ``self.n_embd``, ``view(B, T, self.n_head, C // self.n_head)``,
    a causal mask buffer, pre-norm blocks, an LM head tied to the token embedding."""

    class Block(nn.Module):
        def __init__(self, n_embd: int, n_head: int, block: int) -> None:
            super().__init__()
            self.n_embd, self.n_head = n_embd, n_head
            self.ln_1, self.ln_2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
            self.c_attn, self.c_proj = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd)
            self.c_fc, self.mlp_proj = nn.Linear(n_embd, 4 * n_embd), nn.Linear(4 * n_embd, n_embd)
            self.register_buffer("bias", torch.tril(torch.ones(block, block)).view(1, 1, block, block))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            B, T, C = x.size()
            q, k, v = self.c_attn(self.ln_1(x)).split(self.n_embd, dim=2)
            q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = F.softmax(att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf")), dim=-1)
            x = x + self.c_proj((att @ v).transpose(1, 2).contiguous().view(B, T, C))
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))

    def __init__(self, vocab: int = 256, n_embd: int = 128, n_head: int = 4, n_layer: int = 4, block: int = 64) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, n_embd), nn.Embedding(block, n_embd)
        self.h = nn.ModuleList(GPT.Block(n_embd, n_head, block) for _ in range(n_layer))
        self.ln_f, self.lm_head = nn.LayerNorm(n_embd), nn.Linear(n_embd, vocab, bias=False)
        self.wte.weight = self.lm_head.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


class Llama(nn.Module):
    """Meta's Llama code: RMSNorm, ``n_heads``/``n_kv_heads`` with ``repeat_interleave``, rotary
    embeddings through ``view_as_complex``, a SwiGLU feed-forward."""

    class RMSNorm(nn.Module):
        def __init__(self, dim: int, eps: float = 1e-6) -> None:
            super().__init__()
            self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

    class Layer(nn.Module):
        def __init__(self, dim: int, n_heads: int, n_kv_heads: int, hidden: int) -> None:
            super().__init__()
            self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
            self.n_rep = n_heads // n_kv_heads
            self.wq = nn.Linear(dim, n_heads * self.head_dim, bias=False)
            self.wk = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
            self.wv = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
            self.wo = nn.Linear(n_heads * self.head_dim, dim, bias=False)
            self.w1, self.w3 = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
            self.w2 = nn.Linear(hidden, dim, bias=False)
            self.attention_norm, self.ffn_norm = Llama.RMSNorm(dim), Llama.RMSNorm(dim)

        def forward(self, x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
            b, s, _ = x.shape
            h = self.attention_norm(x)
            q = self.wq(h).view(b, s, self.n_heads, self.head_dim)
            k = self.wk(h).view(b, s, self.n_kv_heads, self.head_dim)
            v = self.wv(h).view(b, s, self.n_kv_heads, self.head_dim)
            q, k = (torch.view_as_real(torch.view_as_complex(t.float().reshape(*t.shape[:-1], -1, 2)) * freqs)
                    .flatten(3).type_as(t) for t in (q, k))
            k, v = (torch.repeat_interleave(t, self.n_rep, dim=2) for t in (k, v))
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
            x = x + self.wo(o.transpose(1, 2).contiguous().view(b, s, -1))
            h = self.ffn_norm(x)
            return x + self.w2(F.silu(self.w1(h)) * self.w3(h))

    def __init__(self, vocab: int = 256, dim: int = 128, n_layers: int = 4, n_heads: int = 8, n_kv_heads: int = 4,
                 hidden: int = 344, max_len: int = 64) -> None:
        super().__init__()
        self.tok_embeddings = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(Llama.Layer(dim, n_heads, n_kv_heads, hidden) for _ in range(n_layers))
        self.norm, self.output = Llama.RMSNorm(dim), nn.Linear(dim, vocab, bias=False)
        head_dim = dim // n_heads
        angles = torch.outer(torch.arange(max_len).float(), 1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.register_buffer("freqs_cis", torch.polar(torch.ones_like(angles), angles))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.tok_embeddings(tokens)
        freqs = self.freqs_cis[: tokens.shape[1]].view(1, tokens.shape[1], 1, -1)
        for layer in self.layers:
            h = layer(h, freqs)
        return self.output(self.norm(h))


class ViT(nn.Module):
    """A hand-written ViT as in many tutorials: fused qkv reshaped with ``self.num_heads`` and
    ``C // self.num_heads``, a class token, a learned position table, an MLP head."""

    class Attention(nn.Module):
        def __init__(self, dim: int, num_heads: int) -> None:
            super().__init__()
            self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
            self.qkv, self.proj = nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))

    def __init__(self, image: int = 32, patch: int = 4, dim: int = 96, depth: int = 4, heads: int = 6,
                 classes: int = 10) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(nn.ModuleDict({"norm1": nn.LayerNorm(dim), "attn": ViT.Attention(dim, heads),
                                                   "norm2": nn.LayerNorm(dim),
                                                   "mlp": nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(),
                                                                        nn.Linear(4 * dim, dim))})
                                    for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for b in self.blocks:
            x = x + b["attn"](b["norm1"](x))
            x = x + b["mlp"](b["norm2"](x))
        return self.head(self.norm(x)[:, 0])


def _conv(a: int, b: int, k: int = 1, s: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(a, b, k, s, k // 2, bias=False), nn.BatchNorm2d(b), nn.SiLU())


class YOLO(nn.Module):
    """A YOLOv8-style backbone and neck: C2f blocks (``split((self.c, self.c), 1)``), SPPF, upsampling
    and concatenation, and a per-level conv head."""

    class C2f(nn.Module):
        def __init__(self, c1: int, c2: int, n: int = 1) -> None:
            super().__init__()
            self.c = c2 // 2
            self.cv1, self.cv2 = _conv(c1, 2 * self.c), _conv((2 + n) * self.c, c2)
            self.m = nn.ModuleList(nn.Sequential(_conv(self.c, self.c, 3), _conv(self.c, self.c, 3)) for _ in range(n))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = list(self.cv1(x).split((self.c, self.c), 1))
            y.extend(m(y[-1]) + y[-1] for m in self.m)
            return self.cv2(torch.cat(y, 1))

    class SPPF(nn.Module):
        def __init__(self, c1: int, c2: int) -> None:
            super().__init__()
            self.cv1, self.cv2 = _conv(c1, c1 // 2), _conv(c1 * 2, c2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = [self.cv1(x)]
            y.extend(F.max_pool2d(y[-1], 5, 1, 2) for _ in range(3))
            return self.cv2(torch.cat(y, 1))

    def __init__(self, classes: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv(3, 16, 3, 2), _conv(16, 32, 3, 2), YOLO.C2f(32, 32))
        self.p4 = nn.Sequential(_conv(32, 64, 3, 2), YOLO.C2f(64, 64, 2))
        self.p5 = nn.Sequential(_conv(64, 128, 3, 2), YOLO.C2f(128, 128), YOLO.SPPF(128, 128))
        self.up = YOLO.C2f(128 + 64, 64)
        self.head4, self.head5 = nn.Conv2d(64, classes + 4, 1), nn.Conv2d(128, classes + 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p4 = self.p4(self.stem(x))
        p5 = self.p5(p4)
        n4 = self.up(torch.cat([F.interpolate(p5, scale_factor=2.0), p4], 1))
        return self.head4(n4), self.head5(p5)


class UNet(nn.Module):
    """The classic U-Net: double convs, max-pool down, transposed-conv up, skips concatenated."""

    @staticmethod
    def double(a: int, b: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(),
                             nn.Conv2d(b, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU())

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.d1, self.d2, self.d3 = UNet.double(3, 32), UNet.double(32, 64), UNet.double(64, 128)
        self.u2, self.c2 = nn.ConvTranspose2d(128, 64, 2, 2), UNet.double(128, 64)
        self.u1, self.c1 = nn.ConvTranspose2d(64, 32, 2, 2), UNet.double(64, 32)
        self.out = nn.Conv2d(32, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.d1(x)
        b = self.d2(F.max_pool2d(a, 2))
        c = self.d3(F.max_pool2d(b, 2))
        b = self.c2(torch.cat([self.u2(c), b], 1))
        return self.out(self.c1(torch.cat([self.u1(b), a], 1)))


class ConvNeXtV2(nn.Module):
    """ConvNeXt-V2 blocks written out: depthwise 7x7, channels-last LayerNorm, GRN with
    ``torch.linalg.vector_norm``, inverted bottleneck; stages joined by strided convs."""

    class Block(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.dwconv, self.norm = nn.Conv2d(dim, dim, 7, padding=3, groups=dim), nn.LayerNorm(dim)
            self.pwconv1, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
            self.gamma, self.beta = nn.Parameter(torch.zeros(1, 1, 1, 4 * dim)), nn.Parameter(torch.zeros(1, 1, 1, 4 * dim))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = F.gelu(self.pwconv1(self.norm(self.dwconv(x).permute(0, 2, 3, 1))))
            gx = torch.linalg.vector_norm(h, ord=2, dim=(1, 2), keepdim=True)
            h = self.gamma * (h * (gx / (gx.mean(dim=-1, keepdim=True) + 1e-6))) + self.beta + h
            return x + self.pwconv2(h).permute(0, 3, 1, 2)

    def __init__(self, dims: tuple[int, ...] = (32, 64, 128), classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, dims[0], 4, 4)]
        for i, d in enumerate(dims):
            if i:
                layers.append(nn.Conv2d(dims[i - 1], d, 2, 2))
            layers.extend([ConvNeXtV2.Block(d), ConvNeXtV2.Block(d)])
        self.features, self.norm, self.head = nn.Sequential(*layers), nn.LayerNorm(dims[-1]), nn.Linear(dims[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.features(x).mean((2, 3))))


class ESPCN(nn.Module):
    """Sub-pixel super-resolution: convs, then ``pixel_shuffle`` to 3x the size."""

    def __init__(self, scale: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 64, 5, padding=2), nn.Tanh(), nn.Conv2d(64, 32, 3, padding=1), nn.Tanh())
        self.tail = nn.Conv2d(32, 3 * scale * scale, 3, padding=1)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.tail(self.body(x)), self.scale)


class Conformer(nn.Module):
    """A Conformer-style audio encoder: conv subsampling, feed-forward, self-attention (nn.MultiheadAttention),
    a conv module with GLU and a depthwise 1-d conv, a classifier over the mean."""

    class Block(nn.Module):
        def __init__(self, d: int, heads: int) -> None:
            super().__init__()
            self.ff = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
            self.norm_att, self.att = nn.LayerNorm(d), nn.MultiheadAttention(d, heads, batch_first=True)
            self.norm_conv, self.pw1 = nn.LayerNorm(d), nn.Conv1d(d, 2 * d, 1)
            self.dw, self.bn, self.pw2 = nn.Conv1d(d, d, 15, padding=7, groups=d), nn.BatchNorm1d(d), nn.Conv1d(d, d, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + 0.5 * self.ff(x)
            h = self.norm_att(x)
            x = x + self.att(h, h, h, need_weights=False)[0]
            h = F.glu(self.pw1(self.norm_conv(x).transpose(1, 2)), dim=1)
            return x + self.pw2(F.silu(self.bn(self.dw(h)))).transpose(1, 2)

    def __init__(self, mels: int = 40, d: int = 96, heads: int = 4, layers: int = 2, classes: int = 12) -> None:
        super().__init__()
        self.sub = nn.Sequential(nn.Conv2d(1, d, 3, 2), nn.ReLU(), nn.Conv2d(d, d, 3, 2), nn.ReLU())
        self.proj = nn.Linear(d * (((mels - 1) // 2 - 1) // 2), d)
        self.blocks = nn.ModuleList(Conformer.Block(d, heads) for _ in range(layers))
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, T, mels]
        h = self.sub(x.unsqueeze(1))
        h = self.proj(h.permute(0, 2, 1, 3).flatten(2))
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean(1))


class TextLSTM(nn.Module):
    """A text classifier: embedding, a 2-layer bidirectional LSTM, the last step to a linear layer."""

    def __init__(self, vocab: int = 1000, embed: int = 64, hidden: int = 128, classes: int = 4) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(ids))
        return self.fc(out[:, -1, :])


class FastText(nn.Module):
    """fastText's shape: an EmbeddingBag averaging each document's tokens, then an MLP."""

    def __init__(self, vocab: int = 5000, dim: int = 64, classes: int = 4) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab, dim, mode="mean")
        self.fc1, self.fc2 = nn.Linear(dim, 128), nn.Linear(128, classes)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(self.bag(ids, offsets))))


# --- a second set: torch's own transformer layers, routing, einsum, shuffles, two inputs, graphs ---


class TorchTransformerClassifier(nn.Module):
    """torch's own nn.TransformerEncoder, norm_first, batch_first, with a CLS token and learned positions."""
    def __init__(self, vocab=500, d=64, heads=4, layers=2, classes=5, max_len=64):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(1, max_len + 1, d))
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=4 * d, dropout=0.1, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, ids):
        x = self.emb(ids)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos[:, : ids.shape[1] + 1]
        return self.head(self.encoder(x)[:, 0])


class Seq2Seq(nn.Module):
    """nn.Transformer encoder-decoder with a causal mask on the target; shared embedding tied to the output."""
    def __init__(self, vocab=300, d=64, heads=4):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.tf = nn.Transformer(d, heads, 2, 2, 128, dropout=0.0, batch_first=True)
        self.out = nn.Linear(d, vocab, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, src, tgt):
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1])
        h = self.tf(self.emb(src) * math.sqrt(self.emb.embedding_dim), self.emb(tgt), tgt_mask=mask)
        return self.out(h)


class MoE(nn.Module):
    """Top-2 mixture of experts, tokens routed with index_add_ (Mixtral-style, written by hand)."""
    def __init__(self, d=32, hidden=64, experts=4, k=2, classes=6):
        super().__init__()
        self.inp = nn.Linear(16, d)
        self.router = nn.Linear(d, experts, bias=False)
        self.w1 = nn.ModuleList(nn.Linear(d, hidden, bias=False) for _ in range(experts))
        self.w2 = nn.ModuleList(nn.Linear(hidden, d, bias=False) for _ in range(experts))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)
        self.k = k

    def forward(self, x):
        h = self.inp(x)
        b, t, d = h.shape
        flat = h.reshape(-1, d)
        weights, chosen = torch.topk(F.softmax(self.router(flat), dim=-1), self.k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        out = torch.zeros_like(flat)
        for e in range(len(self.w1)):
            rows, slot = torch.where(chosen == e)
            if rows.numel() == 0:
                continue
            y = self.w2[e](F.silu(self.w1[e](flat[rows])))
            out.index_add_(0, rows, y * weights[rows, slot, None])
        return self.head(self.norm(flat + out).reshape(b, t, d).mean(1))


class EinsumAttention(nn.Module):
    """Attention written with einsum and a rotary embedding buffer of head_dim."""
    def __init__(self, d=64, heads=4, classes=3, vocab=200):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)
        self.heads = heads
        hd = d // heads
        inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
        t = torch.arange(128).float()
        freqs = torch.outer(t, inv)
        self.register_buffer("cos", freqs.cos(), persistent=False)
        self.register_buffer("sin", freqs.sin(), persistent=False)

    def rope(self, x):
        n = x.shape[2]
        x1, x2 = x[..., 0::2], x[..., 1::2]
        c, s = self.cos[:n], self.sin[:n]
        return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)

    def forward(self, ids):
        x = self.emb(ids)
        b, n, d = x.shape
        q, k, v = self.qkv(self.n1(x)).chunk(3, dim=-1)
        q, k, v = (t.view(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        q, k = self.rope(q), self.rope(k)
        att = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(q.shape[-1])
        y = torch.einsum("bhij,bhjd->bhid", att.softmax(-1), v)
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, d))
        x = x + self.ff(self.n2(x))
        return self.head(x.mean(1))


class ShuffleBlockNet(nn.Module):
    """Channel shuffle written by hand (view/transpose), grouped 1x1 convs, SE with adaptive pooling."""
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 48, 3, 2, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True))
        self.g1 = nn.Sequential(nn.Conv2d(48, 48, 1, groups=4, bias=False), nn.BatchNorm2d(48), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(48, 48, 3, 1, 1, groups=48, bias=False), nn.BatchNorm2d(48))
        self.g2 = nn.Sequential(nn.Conv2d(48, 48, 1, groups=4, bias=False), nn.BatchNorm2d(48))
        self.se1, self.se2 = nn.Conv2d(48, 12, 1), nn.Conv2d(12, 48, 1)
        self.head = nn.Linear(48, classes)

    @staticmethod
    def shuffle(x, groups):
        b, c, h, w = x.shape
        return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)

    def forward(self, x):
        x = self.stem(x)
        y = self.g2(self.dw(self.shuffle(self.g1(x), 4)))
        y = y * torch.sigmoid(self.se2(F.relu(self.se1(F.adaptive_avg_pool2d(y, 1)))))
        x = F.relu(x + y)
        return self.head(x.mean((2, 3)))


class FiLMNet(nn.Module):
    """Two inputs: an image and a condition vector; FiLM gamma/beta from one Linear, split with chunk."""
    def __init__(self, cond=8, classes=4):
        super().__init__()
        self.c1 = nn.Conv2d(3, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 32, 3, padding=1)
        self.film = nn.Linear(cond, 64)
        self.head = nn.Linear(32, classes)

    def forward(self, img, c):
        h = F.relu(self.c1(img))
        gamma, beta = self.film(c).chunk(2, dim=1)
        h = self.c2(h) * gamma[:, :, None, None] + beta[:, :, None, None]
        return self.head(F.relu(h).flatten(2).mean(-1))


class TCN(nn.Module):
    """Temporal conv net: causal dilated Conv1d with weight norm, F.pad for causality, residual 1x1."""
    def __init__(self, cin=6, ch=32, classes=5):
        super().__init__()
        wn = nn.utils.parametrizations.weight_norm
        self.c1 = wn(nn.Conv1d(cin, ch, 3, dilation=1))
        self.c2 = wn(nn.Conv1d(ch, ch, 3, dilation=2))
        self.c3 = wn(nn.Conv1d(ch, ch, 3, dilation=4))
        self.down = nn.Conv1d(cin, ch, 1)
        self.head = nn.Linear(ch, classes)

    def forward(self, x):
        h = F.relu(self.c1(F.pad(x, (2, 0))))
        h = F.relu(self.c2(F.pad(h, (4, 0))))
        h = self.c3(F.pad(h, (8, 0)))
        return self.head(F.relu(h + self.down(x))[:, :, -1])


class GRUAttn(nn.Module):
    """Bidirectional GRU with additive attention pooling."""
    def __init__(self, vocab=400, d=32, hidden=48, classes=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, d, padding_idx=0)
        self.gru = nn.GRU(d, hidden, batch_first=True, bidirectional=True)
        self.att = nn.Linear(2 * hidden, 1)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, ids):
        out, _ = self.gru(self.emb(ids))
        w = torch.softmax(self.att(torch.tanh(out)).squeeze(-1), dim=1)
        return self.head((out * w.unsqueeze(-1)).sum(1))


class GNN(nn.Module):
    """Message passing over an edge list with index_add_ (GCN-like, written by hand)."""
    def __init__(self, fin=12, hidden=32, classes=4):
        super().__init__()
        self.l1, self.l2 = nn.Linear(fin, hidden), nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x, edges):
        src, dst = edges
        h = F.relu(self.l1(x))
        agg = torch.zeros_like(h).index_add_(0, dst, h[src])
        h = F.relu(self.l2(h + agg))
        return self.head(h)


class Perceiver(nn.Module):
    """Learned latent array cross-attending to the input (nn.MultiheadAttention with kdim/vdim)."""
    def __init__(self, fin=20, d=64, latents=8, classes=4):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(latents, d) * 0.02)
        self.inp = nn.Linear(fin, 48)
        self.cross = nn.MultiheadAttention(d, 4, kdim=48, vdim=48, batch_first=True)
        self.ff = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 128), nn.GELU(), nn.Linear(128, d))
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        kv = self.inp(x)
        q = self.latents.unsqueeze(0).expand(x.shape[0], -1, -1)
        h, _ = self.cross(q, kv, kv, need_weights=False)
        h = h + self.ff(h)
        return self.head(h.mean(1))


class MobileViTish(nn.Module):
    """Conv features unfolded into patches for a transformer layer and folded back (unfold/fold by reshape)."""
    def __init__(self, classes=10, d=48, p=2):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.SiLU())
        self.local = nn.Conv2d(32, d, 1)
        self.tf = nn.TransformerEncoderLayer(d, 4, 2 * d, dropout=0.0, batch_first=True)
        self.back = nn.Conv2d(d, 32, 1)
        self.fuse = nn.Conv2d(64, 64, 3, padding=1)
        self.head = nn.Linear(64, classes)
        self.p = p

    def forward(self, x):
        x = self.conv(x)
        y = self.local(x)
        b, c, h, w = y.shape
        p = self.p
        y = y.reshape(b, c, h // p, p, w // p, p).permute(0, 3, 5, 2, 4, 1).reshape(b * p * p, (h // p) * (w // p), c)
        y = self.tf(y)
        y = y.reshape(b, p, p, h // p, w // p, c).permute(0, 5, 3, 1, 4, 2).reshape(b, c, h, w)
        y = self.back(y)
        return self.head(F.silu(self.fuse(torch.cat([x, y], 1))).mean((2, 3)))


class DenseHeads(nn.Module):
    """Multi-task: shared trunk, two heads, dict output."""
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.GELU(),
                                   nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GroupNorm(8, 64), nn.GELU())
        self.cls = nn.Linear(64, 7)
        self.seg = nn.Conv2d(64, 3, 1)

    def forward(self, x):
        f = self.trunk(x)
        return {"logits": self.cls(f.mean((2, 3))), "mask": F.interpolate(self.seg(f), scale_factor=2.0)}




class DETRish(nn.Module):
    """Learned queries repeated over the batch (seq-first nn.Transformer decoder), a class and a box head."""
    def __init__(self, d=32, queries=5):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, d, 3, 2, 1))
        self.query = nn.Embedding(queries, d)
        self.dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(d, 4, 64, dropout=0.0), 2)
        self.cls, self.box = nn.Linear(d, 4), nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 4))

    def forward(self, x):
        f = self.backbone(x).flatten(2).permute(2, 0, 1)  # (HW, B, d)
        q = self.query.weight.unsqueeze(1).repeat(1, x.shape[0], 1)
        h = self.dec(q, f)
        return self.cls(h), self.box(h).sigmoid()


class SNDiscriminator(nn.Module):
    """GAN discriminator with spectral norm (parametrizations) and LeakyReLU."""
    def __init__(self):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.c1, self.c2, self.c3 = sn(nn.Conv2d(3, 32, 4, 2, 1)), sn(nn.Conv2d(32, 64, 4, 2, 1)), sn(nn.Conv2d(64, 1, 4))

    def forward(self, x):
        return self.c3(F.leaky_relu(self.c2(F.leaky_relu(self.c1(x), 0.2)), 0.2)).flatten(1)


class Siamese(nn.Module):
    """One encoder applied to two inputs; cosine similarity of the embeddings."""
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(32, 24))

    def forward(self, a, b):
        return F.cosine_similarity(self.enc(a), self.enc(b))


class SpaceToDepth(nn.Module):
    """PixelUnshuffle stem, depthwise conv with channel multiplier 2, PixelShuffle back."""
    def __init__(self):
        super().__init__()
        self.down = nn.PixelUnshuffle(2)
        self.c1 = nn.Conv2d(12, 24, 1)
        self.dw = nn.Conv2d(24, 48, 3, padding=1, groups=24)
        self.c2 = nn.Conv2d(48, 12, 1)
        self.up = nn.PixelShuffle(2)

    def forward(self, x):
        return self.up(self.c2(F.relu(self.dw(F.relu(self.c1(self.down(x)))))))


class Capsules(nn.Module):
    """Primary capsules: conv channels viewed as (capsules, capsule dim), squashed."""
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 64, 5, 2)
        self.caps = nn.Conv2d(64, 8 * 16, 3, 2)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        u = self.caps(F.relu(self.conv(x)))
        b = u.shape[0]
        u = u.view(b, 8, 16, -1).permute(0, 3, 1, 2).reshape(b, -1, 16)
        n2 = (u ** 2).sum(-1, keepdim=True)
        v = n2 / (1 + n2) * u / (n2.sqrt() + 1e-8)
        return self.head(v.mean(1))


class LSTMCellLoop(nn.Module):
    """nn.LSTMCell unrolled by hand over time, hidden state initialised with zeros of hidden size."""
    def __init__(self, fin=10, hidden=32, classes=3):
        super().__init__()
        self.cell = nn.LSTMCell(fin, hidden)
        self.hidden = hidden
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        h = x.new_zeros(x.shape[0], self.hidden)
        c = x.new_zeros(x.shape[0], self.hidden)
        for t in range(x.shape[1]):
            h, c = self.cell(x[:, t], (h, c))
        return self.head(h)


class MaskedFill(nn.Module):
    """Padding mask applied with masked_fill and torch.where over token features."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(100, 32, padding_idx=0)
        self.ff = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.head = nn.Linear(32, 2)

    def forward(self, ids):
        pad = (ids == 0).unsqueeze(-1)
        h = self.ff(self.emb(ids)).masked_fill(pad, 0.0)
        h = torch.where(pad, torch.zeros_like(h), h)
        return self.head(h.sum(1) / (~pad).sum(1).clamp_min(1))


class Involution(nn.Module):
    """F.unfold (im2col) with per-pixel kernels generated from the features."""
    def __init__(self, c=16, k=3, groups=4):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.gen = nn.Conv2d(c, k * k * groups, 1)
        self.k, self.g = k, groups
        self.out = nn.Conv2d(c, 5, 1)

    def forward(self, x):
        x = self.stem(x)
        b, c, h, w = x.shape
        kern = self.gen(x).view(b, self.g, self.k * self.k, h, w).unsqueeze(2)
        patches = F.unfold(x, self.k, padding=self.k // 2).view(b, self.g, c // self.g, self.k * self.k, h, w)
        return self.out((kern * patches).sum(3).view(b, c, h, w)).mean((2, 3))


class AttentionGate(nn.Module):
    """Attention U-Net's gate: a gating signal from the coarse path weighs the skip features."""
    def __init__(self):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.enc2 = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.wg, self.wx, self.psi = nn.Conv2d(32, 8, 1), nn.Conv2d(16, 8, 1), nn.Conv2d(8, 1, 1)
        self.up = nn.ConvTranspose2d(32, 16, 2, 2)
        self.dec = nn.Conv2d(32, 16, 3, padding=1)
        self.out = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        s = self.enc1(x)
        g = self.enc2(s)
        a = torch.sigmoid(self.psi(F.relu(self.wx(s) + F.interpolate(self.wg(g), size=s.shape[-2:]))))
        return self.out(F.relu(self.dec(torch.cat([s * a, self.up(g)], 1))))


class FPNNet(nn.Module):
    """torchvision.ops.FeaturePyramidNetwork on a small backbone's OrderedDict of stages."""
    def __init__(self):
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork
        self.c1 = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())
        self.c3 = nn.Sequential(nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU())
        self.fpn = FeaturePyramidNetwork([16, 32, 64], 24)
        self.head = nn.Conv2d(24, 5, 1)

    def forward(self, x):
        a = self.c1(x)
        b = self.c2(a)
        c = self.c3(b)
        feats = self.fpn(collections.OrderedDict([("a", a), ("b", b), ("c", c)]))
        return [self.head(f) for f in feats.values()]


class SEResNet(nn.Module):
    """A residual block with squeeze-excitation written as y.view(b, c, 1, 1) and expand_as."""
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.c1, self.c2 = nn.Conv2d(32, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1)
        self.bn1, self.bn2 = nn.BatchNorm2d(32), nn.BatchNorm2d(32)
        self.fc = nn.Sequential(nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 32), nn.Sigmoid())
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = self.bn2(self.c2(F.relu(self.bn1(self.c1(x)))))
        b, c, _, _ = y.size()
        w = self.fc(F.adaptive_avg_pool2d(y, 1).view(b, c)).view(b, c, 1, 1)
        x = F.relu(x + y * w.expand_as(y))
        return self.head(x.mean((2, 3)))


class DenseLoop(nn.Module):
    """DenseNet growth written as a Python loop of torch.cat."""
    def __init__(self, growth=8, layers=3):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.layers = nn.ModuleList(nn.Sequential(nn.BatchNorm2d(16 + i * growth), nn.ReLU(),
                                                  nn.Conv2d(16 + i * growth, growth, 3, padding=1)) for i in range(layers))
        self.head = nn.Linear(16 + layers * growth, 4)

    def forward(self, x):
        feats = [self.stem(x)]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1)))
        return self.head(torch.cat(feats, 1).mean((2, 3)))


class ConvLSTM(nn.Module):
    """A ConvLSTM cell over a short clip: conv gates chunked into four, hidden state zeros of a stored width."""
    def __init__(self, cin=3, hidden=16):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(cin + hidden, 4 * hidden, 3, padding=1)
        self.head = nn.Conv2d(hidden, 2, 1)

    def forward(self, clip):
        b, t, _, h, w = clip.shape
        hs = clip.new_zeros(b, self.hidden, h, w)
        cs = hs.clone()
        for i in range(t):
            i_, f, g, o = self.gates(torch.cat([clip[:, i], hs], 1)).chunk(4, 1)
            cs = torch.sigmoid(f) * cs + torch.sigmoid(i_) * torch.tanh(g)
            hs = torch.sigmoid(o) * torch.tanh(cs)
        return self.head(hs)


class Mixer(nn.Module):
    """MLP-Mixer: token mixing over the transposed patch dim, channel mixing over features."""
    def __init__(self, patches=16, d=32):
        super().__init__()
        self.embed = nn.Conv2d(3, d, 4, 4)
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.tok = nn.Sequential(nn.Linear(patches, 24), nn.GELU(), nn.Linear(24, patches))
        self.ch = nn.Sequential(nn.Linear(d, 64), nn.GELU(), nn.Linear(64, d))
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = x + self.tok(self.n1(x).transpose(1, 2)).transpose(1, 2)
        x = x + self.ch(self.n2(x))
        return self.head(x.mean(1))


class TiedAutoencoder(nn.Module):
    """Decoder reuses the encoder's conv weights through conv_transpose2d."""
    def __init__(self):
        super().__init__()
        self.e1, self.e2 = nn.Conv2d(1, 16, 3, 2, 1), nn.Conv2d(16, 32, 3, 2, 1)

    def forward(self, x):
        h = F.relu(self.e2(F.relu(self.e1(x))))
        h = F.relu(F.conv_transpose2d(h, self.e2.weight, stride=2, padding=1, output_padding=1))
        return torch.sigmoid(F.conv_transpose2d(h, self.e1.weight, stride=2, padding=1, output_padding=1))


class PointNet(nn.Module):
    """PointNet: shared MLPs as Conv1d, a feature transform predicted as a k x k matrix, max pooling."""
    def __init__(self, k=16, classes=4):
        super().__init__()
        self.c1 = nn.Conv1d(3, k, 1)
        self.t1, self.t2 = nn.Conv1d(k, 32, 1), nn.Linear(32, k * k)
        self.c2 = nn.Conv1d(k, 64, 1)
        self.head = nn.Linear(64, classes)
        self.k = k

    def forward(self, pts):
        x = F.relu(self.c1(pts))
        m = self.t2(F.relu(self.t1(x)).max(2)[0]).view(-1, self.k, self.k) + torch.eye(self.k)
        x = torch.bmm(x.transpose(1, 2), m).transpose(1, 2)
        return self.head(F.relu(self.c2(x)).max(2)[0])


class Res2Net(nn.Module):
    """Res2Net block: torch.split into scales, hierarchical residual adds, concatenated back."""
    def __init__(self, width=8, scales=4):
        super().__init__()
        self.c1 = nn.Conv2d(3, width * scales, 1)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(scales - 1))
        self.c3 = nn.Conv2d(width * scales, 16, 1)
        self.width = width
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        parts = torch.split(F.relu(self.c1(x)), self.width, 1)
        out, prev = [parts[0]], None
        for i, conv in enumerate(self.convs):
            sp = parts[i + 1] if prev is None else parts[i + 1] + prev
            prev = F.relu(conv(sp))
            out.append(prev)
        return self.head(self.c3(torch.cat(out, 1)).mean((2, 3)))


Out = collections.namedtuple("Out", ["logits", "features"])


class NamedOut(nn.Module):
    """A namedtuple output: logits and the pooled features."""
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.cls = nn.Linear(32, 5)

    def forward(self, x):
        f = self.body(x).mean((2, 3))
        return Out(self.cls(f), f)


class KimCNN(nn.Module):
    """Kim's sentence CNN: Conv1d of three widths over embeddings, max over time, concatenated."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(500, 32)
        self.convs = nn.ModuleList(nn.Conv1d(32, 24, k) for k in (3, 4, 5))
        self.fc = nn.Linear(72, 4)

    def forward(self, x):
        e = self.emb(x).transpose(1, 2)
        return self.fc(torch.cat([F.relu(c(e)).max(dim=2)[0] for c in self.convs], 1))


class MBConvNet(nn.Module):
    """EfficientNet's MBConv by hand: expansion, depthwise, SE with 1x1 convs, drop path in training."""
    class Block(nn.Module):
        def __init__(self, c=16, e=4, p=0.1):
            super().__init__()
            h = c * e
            self.expand = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.Hardswish())
            self.dw = nn.Sequential(nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.Hardswish())
            self.se_r, self.se_e = nn.Conv2d(h, 8, 1), nn.Conv2d(8, h, 1)
            self.proj = nn.Sequential(nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))
            self.p = p

        def forward(self, x):
            y = self.dw(self.expand(x))
            y = self.proj(y * torch.sigmoid(self.se_e(F.silu(self.se_r(y.mean((2, 3), keepdim=True))))))
            if self.training:
                y = y * (torch.rand(x.shape[0], 1, 1, 1) > self.p) / (1 - self.p)
            return x + y

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.SiLU())
        self.blocks = nn.Sequential(MBConvNet.Block(), MBConvNet.Block())
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class STN(nn.Module):
    """The spatial transformer tutorial: a localisation net predicts theta; affine_grid, grid_sample."""
    def __init__(self):
        super().__init__()
        self.loc = nn.Sequential(nn.Conv2d(1, 8, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(8, 10, 5), nn.MaxPool2d(2),
                                 nn.ReLU())
        self.fc_loc = nn.Sequential(nn.Linear(10 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 6))
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(16, 10))

    def forward(self, x):
        theta = self.fc_loc(self.loc(x).view(-1, 10 * 4 * 4)).view(-1, 2, 3)
        return self.body(F.grid_sample(x, F.affine_grid(theta, x.size(), align_corners=False), align_corners=False))


class VAE(nn.Module):
    """A convolutional VAE: mu and log-variance by chunk, a decoder viewing to (self.c, 7, 7)."""
    def __init__(self, z=16):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(), nn.Flatten())
        self.fc, self.dec_fc = nn.Linear(32 * 7 * 7, 2 * z), nn.Linear(z, 32 * 7 * 7)
        self.dec = nn.Sequential(nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(16, 1, 4, 2, 1))
        self.c = 32

    def forward(self, x):
        mu, logvar = self.fc(self.enc(x)).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return torch.sigmoid(self.dec(self.dec_fc(z).view(-1, self.c, 7, 7))), mu, logvar


class WaveNet(nn.Module):
    """WaveNet: dilated causal convs, tanh * sigmoid gates by chunk, residual and skip 1x1 convs."""
    def __init__(self, c=16, layers=4):
        super().__init__()
        self.inp = nn.Conv1d(1, c, 1)
        self.dil = nn.ModuleList(nn.Conv1d(c, 2 * c, 2, dilation=2 ** i) for i in range(layers))
        self.res = nn.ModuleList(nn.Conv1d(c, c, 1) for _ in range(layers))
        self.skip = nn.ModuleList(nn.Conv1d(c, 32, 1) for _ in range(layers))
        self.out = nn.Conv1d(32, 8, 1)

    def forward(self, x):
        h, skips = self.inp(x), 0
        for d, r, k in zip(self.dil, self.res, self.skip):
            a, b = d(F.pad(h, (d.dilation[0], 0))).chunk(2, 1)
            z = torch.tanh(a) * torch.sigmoid(b)
            h, skips = h + r(z), skips + k(z)
        return self.out(F.relu(skips))


class DeformNet(nn.Module):
    """A deformable conv (torchvision.ops.DeformConv2d, DCNv2 with a modulation mask) fed by offset
    and mask convs."""
    def __init__(self):
        super().__init__()
        from torchvision.ops import DeformConv2d
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.off, self.msk = nn.Conv2d(16, 18, 3, padding=1), nn.Conv2d(16, 9, 3, padding=1)
        self.dc = DeformConv2d(16, 32, 3, padding=1)
        self.head = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        h = F.relu(self.c1(x))
        return self.head(F.relu(self.dc(h, self.off(h), torch.sigmoid(self.msk(h)))))


class SwinByHand(nn.Module):
    """Swin blocks written out: torch.roll, window partition views, a relative position bias table."""
    class Block(nn.Module):
        def __init__(self, dim=32, heads=4, ws=4, shift=2):
            super().__init__()
            self.heads, self.ws, self.shift = heads, ws, shift
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            self.table = nn.Parameter(torch.randn((2 * ws - 1) ** 2, heads) * 0.02)
            c = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
            r = (c[:, :, None] - c[:, None, :]).permute(1, 2, 0) + ws - 1
            self.register_buffer("index", r[..., 0] * (2 * ws - 1) + r[..., 1])
            self.mlp = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim))

        def forward(self, x):
            B, H, W, C = x.shape
            ws, n = self.ws, self.ws * self.ws
            h = torch.roll(self.norm1(x), (-self.shift, -self.shift), (1, 2))
            w = h.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, n, C)
            q, k, v = self.qkv(w).reshape(-1, n, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
            att = (q * (C // self.heads) ** -0.5) @ k.transpose(-2, -1)
            att = att + self.table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
            o = self.proj((att.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, C))
            o = o.view(B, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
            x = x + torch.roll(o, (self.shift, self.shift), (1, 2))
            return x + self.mlp(self.norm2(x))

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 32, 4, 4)
        self.blocks = nn.Sequential(SwinByHand.Block(shift=0), SwinByHand.Block())
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.blocks(self.embed(x).permute(0, 2, 3, 1)).mean((1, 2)))


class CLIPish(nn.Module):
    """A CLIP-style dual encoder: image and text projections normalised and compared (img @ txt.T)."""
    def __init__(self):
        super().__init__()
        self.img = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 48, 3, 2, 1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.tok = nn.Embedding(300, 40)
        self.txt = nn.Sequential(nn.Linear(40, 64), nn.GELU(), nn.Linear(64, 40))
        self.img_proj, self.txt_proj = nn.Linear(48, 24, bias=False), nn.Linear(40, 24, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, image, text):
        a = F.normalize(self.img_proj(self.img(image)), dim=-1)
        b = F.normalize(self.txt_proj(self.txt(self.tok(text)).mean(1)), dim=-1)
        return self.logit_scale.exp() * a @ b.t()


class DLRM(nn.Module):
    """DLRM: a bottom MLP and EmbeddingBags stacked, pairwise dot products by bmm, a top MLP."""
    def __init__(self, d=16, tables=3):
        super().__init__()
        self.bot = nn.Sequential(nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, d), nn.ReLU())
        self.embs = nn.ModuleList(nn.EmbeddingBag(100, d, mode="sum") for _ in range(tables))
        n = tables + 1
        self.register_buffer("li", torch.tril_indices(n, n, -1)[0])
        self.register_buffer("lj", torch.tril_indices(n, n, -1)[1])
        self.top = nn.Sequential(nn.Linear(d + n * (n - 1) // 2, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, dense, sparse):
        x = self.bot(dense)
        feats = torch.stack([x] + [e(sparse[:, i:i + 1]) for i, e in enumerate(self.embs)], 1)
        return self.top(torch.cat([x, torch.bmm(feats, feats.transpose(1, 2))[:, self.li, self.lj]], 1))


class RawParams(nn.Module):
    """Layers written from raw parameters: F.conv2d(x, self.w1), x @ self.W with W stored (in, out)."""
    def __init__(self):
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.randn(16, 3, 3, 3) * 0.2), nn.Parameter(torch.zeros(16))
        self.w2, self.b2 = nn.Parameter(torch.randn(32, 16, 3, 3) * 0.1), nn.Parameter(torch.zeros(32))
        self.W, self.b = nn.Parameter(torch.randn(32, 20) * 0.1), nn.Parameter(torch.zeros(20))
        self.V = nn.Parameter(torch.randn(20, 5) * 0.1)

    def forward(self, x):
        x = F.relu(F.conv2d(x, self.w1, self.b1, padding=1))
        x = F.relu(F.conv2d(x, self.w2, self.b2, padding=1, stride=2)).mean((2, 3))
        return F.relu(x @ self.W + self.b) @ self.V


class DCGAN(nn.Module):
    """A DCGAN generator: Linear, nn.Unflatten to a 4x4 map, transposed convs."""
    def __init__(self, z=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z, 64 * 4 * 4), nn.Unflatten(1, (64, 4, 4)), nn.BatchNorm2d(64), nn.ReLU(),
                                 nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
                                 nn.ConvTranspose2d(32, 3, 4, 2, 1), nn.Tanh())

    def forward(self, z):
        return self.net(z)


class TSM(nn.Module):
    """A temporal shift module: a fold of the channels moves one frame back, another one forward."""
    def __init__(self, t=4):
        super().__init__()
        self.t = t
        self.c1, self.c2 = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, 5)

    def shift(self, x):
        nt, c, h, w = x.shape
        x = x.view(nt // self.t, self.t, c, h, w)
        fold, out = c // 8, torch.zeros_like(x)
        out[:, :-1, :fold] = x[:, 1:, :fold]
        out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]
        out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
        return out.view(nt, c, h, w)

    def forward(self, x):
        b, t = x.shape[:2]
        x = F.relu(self.c2(self.shift(F.relu(self.c1(x.flatten(0, 1))))))
        return self.fc(x.mean((2, 3)).view(b, t, -1).mean(1))


class GhostNetByHand(nn.Module):
    """GhostNet's modules: a primary conv and a cheap depthwise conv concatenated, then [:, :self.oup]."""
    class Ghost(nn.Module):
        def __init__(self, inp, oup, ratio=2):
            super().__init__()
            self.oup, init = oup, math.ceil(oup / ratio)
            self.primary = nn.Sequential(nn.Conv2d(inp, init, 1, bias=False), nn.BatchNorm2d(init), nn.ReLU())
            self.cheap = nn.Sequential(nn.Conv2d(init, init * (ratio - 1), 3, padding=1, groups=init, bias=False),
                                       nn.BatchNorm2d(init * (ratio - 1)), nn.ReLU())

        def forward(self, x):
            a = self.primary(x)
            return torch.cat([a, self.cheap(a)], 1)[:, :self.oup]

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.g1, self.g2 = GhostNetByHand.Ghost(16, 40), GhostNetByHand.Ghost(40, 24)
        self.head = nn.Linear(24, 10)

    def forward(self, x):
        return self.head(self.g2(self.g1(F.relu(self.stem(x)))).mean((2, 3)))


class MixConvNet(nn.Module):
    """MixConv: torch.split at a stored list of sizes, one depthwise kernel size per part."""
    def __init__(self, splits=(16, 8, 8, 8)):
        super().__init__()
        self.splits = list(splits)
        self.pw = nn.Conv2d(3, sum(splits), 1)
        self.dws = nn.ModuleList(nn.Conv2d(c, c, 2 * i + 3, padding=i + 1, groups=c) for i, c in enumerate(splits))
        self.head = nn.Linear(sum(splits), 10)

    def forward(self, x):
        x = F.relu(self.pw(x))
        return self.head(F.relu(torch.cat([d(p) for d, p in zip(self.dws, torch.split(x, self.splits, 1))], 1)).mean((2, 3)))


class OrthogonalRNN(nn.Module):
    """An RNN-style cell whose recurrent weight is kept orthogonal (torch's orthogonal parametrization)."""
    def __init__(self, d=24):
        super().__init__()
        self.inp = nn.Linear(10, d)
        self.rec = nn.utils.parametrizations.orthogonal(nn.Linear(d, d, bias=False))
        self.out = nn.Linear(d, 3)

    def forward(self, x):
        h = torch.zeros(x.shape[0], self.inp.out_features)
        for t in range(x.shape[1]):
            h = torch.tanh(self.inp(x[:, t]) + self.rec(h))
        return self.out(h)


class AlibiLM(nn.Module):
    """ALiBi attention by hand: heads folded into the batch (B * self.h) for baddbmm with per-head slopes."""
    def __init__(self, d=32, h=4, vocab=200):
        super().__init__()
        self.h = h
        self.emb, self.ln1, self.ln2 = nn.Embedding(vocab, d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, 64), nn.GELU(), nn.Linear(64, d))
        self.register_buffer("slopes", torch.tensor([2 ** (-8 * (i + 1) / h) for i in range(h)]))
        self.out = nn.Linear(d, vocab)

    def forward(self, t):
        x = self.emb(t)
        B, N, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, N, 3, self.h, D // self.h).permute(2, 0, 3, 1, 4).reshape(
            3, B * self.h, N, D // self.h)
        pos = torch.arange(N)
        bias = (self.slopes[:, None, None] * (pos[None, None, :] - pos[None, :, None])).repeat(B, 1, 1)
        att = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=(D // self.h) ** -0.5).softmax(-1)
        x = x + self.o(torch.bmm(att, v).view(B, self.h, N, -1).transpose(1, 2).reshape(B, N, D))
        return self.out(x + self.ff(self.ln2(x)))


class FairseqLM(nn.Module):
    """fairseq's MultiheadAttention: time-first [T, B, C], view(T, B * self.num_heads, self.head_dim)."""
    class Attention(nn.Module):
        def __init__(self, d=32, h=4):
            super().__init__()
            self.embed_dim, self.num_heads, self.head_dim = d, h, d // h
            self.scaling = self.head_dim ** -0.5
            self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

        def forward(self, x):
            tgt_len, bsz, embed_dim = x.size()
            q = (self.q_proj(x) * self.scaling).contiguous().view(tgt_len, bsz * self.num_heads, self.head_dim)
            k = self.k_proj(x).contiguous().view(-1, bsz * self.num_heads, self.head_dim)
            v = self.v_proj(x).contiguous().view(-1, bsz * self.num_heads, self.head_dim)
            q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
            attn = torch.bmm(F.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1), v)
            return self.out_proj(attn.transpose(0, 1).contiguous().view(tgt_len, bsz, embed_dim))

    def __init__(self):
        super().__init__()
        self.emb, self.ln1, self.ln2 = nn.Embedding(100, 32), nn.LayerNorm(32), nn.LayerNorm(32)
        self.attn = FairseqLM.Attention()
        self.fc1, self.fc2, self.out = nn.Linear(32, 64), nn.Linear(64, 32), nn.Linear(32, 100)

    def forward(self, ids):
        x = self.emb(ids).transpose(0, 1)
        x = x + self.attn(self.ln1(x))
        x = x + self.fc2(F.relu(self.fc1(self.ln2(x))))
        return self.out(x.transpose(0, 1))


class AnnotatedEncoder(nn.Module):
    """The Annotated Transformer: cloned Linears, view(n, -1, self.h, self.d_k), back to self.h * self.d_k,
    a LayerNorm written with x.std."""
    class Attention(nn.Module):
        def __init__(self, h=4, d_model=32):
            super().__init__()
            self.d_k, self.h = d_model // h, h
            self.linears = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(4))

        def forward(self, query, key, value, mask):
            n = query.size(0)
            query, key, value = [lin(x).view(n, -1, self.h, self.d_k).transpose(1, 2)
                                 for lin, x in zip(self.linears, (query, key, value))]
            scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(query.size(-1))
            p = scores.masked_fill(mask.unsqueeze(1) == 0, -1e9).softmax(dim=-1)
            x = torch.matmul(p, value).transpose(1, 2).contiguous().view(n, -1, self.h * self.d_k)
            return self.linears[-1](x)

    class LayerNorm(nn.Module):
        def __init__(self, features, eps=1e-6):
            super().__init__()
            self.a_2, self.b_2, self.eps = nn.Parameter(torch.ones(features)), nn.Parameter(torch.zeros(features)), eps

        def forward(self, x):
            return self.a_2 * (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + self.eps) + self.b_2

    def __init__(self, d=32, layers=2):
        super().__init__()
        self.emb, self.d = nn.Embedding(100, d), d
        self.attn = nn.ModuleList(AnnotatedEncoder.Attention() for _ in range(layers))
        self.ff = nn.ModuleList(nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, d)) for _ in range(layers))
        self.n1 = nn.ModuleList(AnnotatedEncoder.LayerNorm(d) for _ in range(layers))
        self.n2 = nn.ModuleList(AnnotatedEncoder.LayerNorm(d) for _ in range(layers))
        self.out = nn.Linear(d, 5)

    def forward(self, src, mask):
        x = self.emb(src) * math.sqrt(self.d)
        for a, f, n1, n2 in zip(self.attn, self.ff, self.n1, self.n2):
            y = n1(x)
            x = x + a(y, y, y, mask)
            x = x + f(n2(x))
        return self.out(x.mean(1))


class PackedLSTM(nn.Module):
    """Variable-length batches: pack_padded_sequence -> bidirectional LSTM -> last hidden states."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(100, 24, padding_idx=0)
        self.lstm = nn.LSTM(24, 32, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(64, 3)

    def forward(self, ids, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(self.emb(ids), lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.fc(torch.cat([h[-2], h[-1]], 1))


class DDPMUNet(nn.Module):
    """A diffusion U-Net: sinusoidal time embedding added per channel, GroupNorm, an attention block with
    qkv.reshape(B, 3, C, H * W), a skip concatenation."""
    class Res(nn.Module):
        def __init__(self, cin, cout, tdim):
            super().__init__()
            self.n1, self.c1, self.emb = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, padding=1), nn.Linear(tdim, cout)
            self.n2, self.c2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, padding=1)
            self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

        def forward(self, x, e):
            h = self.c1(F.silu(self.n1(x))) + self.emb(F.silu(e))[:, :, None, None]
            return self.skip(x) + self.c2(F.silu(self.n2(h)))

    class Attn(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.norm, self.qkv, self.proj = nn.GroupNorm(8, c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)

        def forward(self, x):
            B, C, H, W = x.shape
            q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)
            a = torch.softmax(torch.einsum("bci,bcj->bij", q, k) * C ** -0.5, -1)
            return x + self.proj(torch.einsum("bij,bcj->bci", a, v).reshape(B, C, H, W))

    def __init__(self, ch=32, tdim=64):
        super().__init__()
        self.ch = ch
        self.temb = nn.Sequential(nn.Linear(ch, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.inc, self.down = nn.Conv2d(3, ch, 3, padding=1), nn.Conv2d(ch, ch, 3, 2, 1)
        self.d1, self.d2 = DDPMUNet.Res(ch, ch, tdim), DDPMUNet.Res(ch, 2 * ch, tdim)
        self.mid, self.up, self.u1 = DDPMUNet.Attn(2 * ch), nn.Upsample(scale_factor=2), DDPMUNet.Res(3 * ch, ch, tdim)
        self.out = nn.Sequential(nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, 3, 3, padding=1))

    def forward(self, x, t):
        half = self.ch // 2
        args = t[:, None].float() * torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)[None]
        e = self.temb(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))
        h1 = self.d1(self.inc(x), e)
        h2 = self.mid(self.d2(self.down(h1), e))
        return self.out(self.u1(torch.cat([self.up(h2), h1], 1), e))


class VQVAE(nn.Module):
    """A VQ-VAE: the nearest codebook entry by cdist and argmin, a straight-through estimator."""
    def __init__(self, d=16, codes=32):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, d, 3, padding=1))
        self.codebook = nn.Embedding(codes, d)
        self.dec = nn.Sequential(nn.Conv2d(d, 32, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1))

    def forward(self, x):
        z = self.enc(x)
        B, D, H, W = z.shape
        idx = torch.cdist(z.permute(0, 2, 3, 1).reshape(-1, D), self.codebook.weight).argmin(1)
        zq = self.codebook(idx).view(B, H, W, D).permute(0, 3, 1, 2)
        return self.dec(z + (zq - z).detach())


class DictBatch(nn.Module):
    """A forward that takes one batch dict: model(batch), batch["image"], batch["meta"]."""
    def __init__(self):
        super().__init__()
        self.img = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.meta, self.head = nn.Linear(4, 16), nn.Linear(48, 3)

    def forward(self, batch):
        return self.head(torch.cat([self.img(batch["image"]), F.relu(self.meta(batch["meta"]))], 1))


class WithScripted(nn.Module):
    """A block compiled with torch.jit.script inside an eager model."""
    def __init__(self):
        super().__init__()
        import warnings
        self.a = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self.b = torch.jit.script(nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()))
        self.c = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.c(self.b(self.a(x))).mean((2, 3)))


class BiFPN(nn.Module):
    """EfficientDet's fast normalised fusion: relu(w) / (sum + eps) weighs resized levels."""
    def __init__(self, c=24):
        super().__init__()
        self.b1, self.b2, self.b3 = nn.Conv2d(3, 16, 3, 2, 1), nn.Conv2d(16, 32, 3, 2, 1), nn.Conv2d(32, 48, 3, 2, 1)
        self.l1, self.l2, self.l3 = nn.Conv2d(16, c, 1), nn.Conv2d(32, c, 1), nn.Conv2d(48, c, 1)
        self.w_td, self.w_out = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(3))
        self.td, self.fuse = nn.Conv2d(c, c, 3, padding=1, groups=c), nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.head = nn.Conv2d(c, 6, 1)

    def forward(self, x):
        p1 = F.relu(self.b1(x))
        p2 = F.relu(self.b2(p1))
        p3 = F.relu(self.b3(p2))
        a, b, c = self.l1(p1), self.l2(p2), self.l3(p3)
        w = F.relu(self.w_td)
        w = w / (w.sum() + 1e-4)
        td = self.td(w[0] * b + w[1] * F.interpolate(c, size=b.shape[-2:], mode="nearest"))
        w2 = F.relu(self.w_out)
        w2 = w2 / (w2.sum() + 1e-4)
        o = self.fuse(w2[0] * a + w2[1] * F.interpolate(td, size=a.shape[-2:]) + w2[2] * F.interpolate(c, size=a.shape[-2:]))
        return self.head(F.silu(o))


class GQAAttn(nn.Module):
    """HF-style repeat_kv with expand+reshape; n_kv_heads < n_heads; SDPA is_causal."""
    def __init__(self, dim=64, n_heads=8, n_kv=2):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = n_heads, n_kv, dim // n_heads
        self.q = nn.Linear(dim, n_heads * self.hd, bias=False)
        self.k = nn.Linear(dim, n_kv * self.hd, bias=False)
        self.v = nn.Linear(dim, n_kv * self.hd, bias=False)
        self.o = nn.Linear(n_heads * self.hd, dim, bias=False)

    def forward(self, x):
        b, s, _ = x.shape
        q = self.q(x).view(b, s, self.n_heads, self.hd).transpose(1, 2)
        k = self.k(x).view(b, s, self.n_kv, self.hd).transpose(1, 2)
        v = self.v(x).view(b, s, self.n_kv, self.hd).transpose(1, 2)
        rep = self.n_heads // self.n_kv
        k = k[:, :, None].expand(b, self.n_kv, rep, s, self.hd).reshape(b, self.n_kv * rep, s, self.hd)
        v = v[:, :, None].expand(b, self.n_kv, rep, s, self.hd).reshape(b, self.n_kv * rep, s, self.hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, s, -1))


class GQALM(nn.Module):
    """A Llama-style LM with grouped-query attention written as HF does (expand + reshape), 8 heads of 8."""
    def __init__(self, n_kv=2):
        super().__init__()
        self.emb = nn.Embedding(100, 64)
        self.blocks = nn.ModuleList()
        for _ in range(2):
            self.blocks.append(nn.ModuleDict(dict(n1=nn.LayerNorm(64), attn=GQAAttn(n_kv=n_kv), n2=nn.LayerNorm(64),
                                                  w12=nn.Linear(64, 256, bias=False), w3=nn.Linear(128, 64, bias=False))))
        self.head = nn.Linear(64, 100)

    def forward(self, ids):
        x = self.emb(ids)
        for b in self.blocks:
            x = x + b["attn"](b["n1"](x))
            a, g = b["w12"](b["n2"](x)).chunk(2, dim=-1)
            x = x + b["w3"](F.silu(a) * g)
        return self.head(x)


class MQALM(GQALM):
    """The same with one key/value head (multi-query attention)."""
    def __init__(self):
        super().__init__(n_kv=1)


class SKConv(nn.Module):
    """Selective kernel: M branches, fuse by sum, softmax over branches via view(b, M, C, 1, 1)."""
    def __init__(self, c=32, M=2):
        super().__init__()
        self.M, self.c = M, c
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.branches = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 3, padding=1 + i, dilation=1 + i, groups=4),
                                                    nn.BatchNorm2d(c), nn.ReLU()) for i in range(M))
        self.fcz = nn.Sequential(nn.Conv2d(c, 16, 1), nn.ReLU())
        self.fcs = nn.Conv2d(16, c * M, 1)
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        feats = torch.stack([b(x) for b in self.branches], 1)  # b M c h w
        u = feats.sum(1)
        z = self.fcz(F.adaptive_avg_pool2d(u, 1))
        a = self.fcs(z).view(x.size(0), self.M, self.c, 1, 1).softmax(1)
        return self.fc((feats * a).sum(1).mean((2, 3)))


class BilinearNet(nn.Module):
    """nn.Bilinear between two encoded inputs."""
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(10, 24), nn.Linear(6, 16)
        self.bil = nn.Bilinear(24, 16, 20)
        self.out = nn.Linear(20, 2)

    def forward(self, x, y):
        return self.out(F.relu(self.bil(F.relu(self.a(x)), F.relu(self.b(y)))))


class SpectralConv2d(nn.Module):
    """A Fourier neural operator's spectral layer: complex weights on the lowest modes of rfft2."""
    def __init__(self, cin, cout, m1, m2):
        super().__init__()
        self.m1, self.m2, self.cout = m1, m2, cout
        scale = 1 / (cin * cout)
        self.w1 = nn.Parameter(scale * torch.rand(cin, cout, m1, m2, dtype=torch.cfloat))
        self.w2 = nn.Parameter(scale * torch.rand(cin, cout, m1, m2, dtype=torch.cfloat))

    def forward(self, x):
        B = x.shape[0]
        x_ft = torch.fft.rfft2(x)
        out_ft = torch.zeros(B, self.cout, x.size(-2), x.size(-1) // 2 + 1, dtype=torch.cfloat)
        out_ft[:, :, :self.m1, :self.m2] = torch.einsum("bixy,ioxy->boxy", x_ft[:, :, :self.m1, :self.m2], self.w1)
        out_ft[:, :, -self.m1:, :self.m2] = torch.einsum("bixy,ioxy->boxy", x_ft[:, :, -self.m1:, :self.m2], self.w2)
        return torch.fft.irfft2(out_ft, s=(x.size(-2), x.size(-1)))


class FNO(nn.Module):
    def __init__(self, width=16):
        super().__init__()
        self.p = nn.Linear(3, width)
        self.convs = nn.ModuleList(SpectralConv2d(width, width, 4, 4) for _ in range(2))
        self.ws = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(2))
        self.q = nn.Sequential(nn.Linear(width, 32), nn.GELU(), nn.Linear(32, 1))

    def forward(self, x):
        x = self.p(x).permute(0, 3, 1, 2)
        for c, w in zip(self.convs, self.ws):
            x = F.gelu(c(x) + w(x))
        return self.q(x.permute(0, 2, 3, 1))


class CRNN(nn.Module):
    """OCR: conv features pooled to height 1, squeezed and permuted to a sequence, BiLSTM, per-step logits."""
    def __init__(self, classes=20):
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d((2, 1)),
                                 nn.Conv2d(32, 48, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((1, None)))
        self.rnn = nn.LSTM(48, 32, bidirectional=True)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        f = self.cnn(x).squeeze(2).permute(2, 0, 1)  # T, B, C
        y, _ = self.rnn(f)
        return self.fc(y).log_softmax(-1)


class MaskedConv2d(nn.Conv2d):
    """PixelCNN's masked convolution: F.conv2d(x, self.weight * self.mask)."""
    def __init__(self, mask_type, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("mask", torch.ones_like(self.weight))
        _, _, kh, kw = self.weight.shape
        self.mask[:, :, kh // 2, kw // 2 + (mask_type == "B"):] = 0
        self.mask[:, :, kh // 2 + 1:] = 0

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding)


class PixelCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(MaskedConv2d("A", 1, 32, 7, padding=3), nn.ReLU(),
                                 MaskedConv2d("B", 32, 32, 3, padding=1), nn.ReLU(),
                                 MaskedConv2d("B", 32, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 256, 1))

    def forward(self, x):
        return self.net(x)


class ModConv(nn.Module):
    """StyleGAN2's modulated conv: weight scaled per sample, demodulated, grouped conv with groups=B."""
    def __init__(self, cin, cout, wdim=16):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.affine = nn.Linear(wdim, cin)
        self.cin, self.cout = cin, cout

    def forward(self, x, w):
        B, C, H, W = x.shape
        s = self.affine(w) + 1
        weight = self.weight[None] * s[:, None, :, None, None]
        d = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
        weight = weight * d[:, :, None, None, None]
        x = x.reshape(1, B * C, H, W)
        out = F.conv2d(x, weight.reshape(B * self.cout, C, 3, 3), padding=1, groups=B)
        return out.reshape(B, self.cout, H, W)


class StyleGen(nn.Module):
    def __init__(self):
        super().__init__()
        self.mapping = nn.Sequential(nn.Linear(16, 16), nn.LeakyReLU(0.2), nn.Linear(16, 16))
        self.const = nn.Parameter(torch.randn(1, 32, 4, 4))
        self.c1, self.c2 = ModConv(32, 32), ModConv(32, 16)
        self.to_rgb = nn.Conv2d(16, 3, 1)

    def forward(self, z):
        w = self.mapping(z)
        x = self.const.repeat(z.shape[0], 1, 1, 1)
        x = F.leaky_relu(self.c1(x, w), 0.2)
        x = F.interpolate(x, scale_factor=2)
        x = F.leaky_relu(self.c2(x, w), 0.2)
        return self.to_rgb(x)


class MAB(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.q, self.k, self.v, self.o = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, X, Y):
        Q, K, V = self.q(X), self.k(Y), self.v(Y)
        ds = Q.shape[-1] // self.h
        Q_, K_, V_ = (torch.cat(t.split(ds, 2), 0) for t in (Q, K, V))
        A = torch.softmax(Q_.bmm(K_.transpose(1, 2)) / math.sqrt(Q.shape[-1]), 2)
        out = torch.cat((Q_ + A.bmm(V_)).split(Q.size(0), 0), 2)
        return out + F.relu(self.o(out))


class SetTransformer(nn.Module):
    """ISAB / PMA from the Set Transformer code: heads split with split(ds, 2) and cat along the batch."""
    def __init__(self, d=32, h=4):
        super().__init__()
        self.inp = nn.Linear(3, d)
        self.I = nn.Parameter(torch.randn(1, 8, d) * 0.1)
        self.mab0, self.mab1 = MAB(d, h), MAB(d, h)
        self.S = nn.Parameter(torch.randn(1, 1, d) * 0.1)
        self.pma = MAB(d, h)
        self.out = nn.Linear(d, 2)

    def forward(self, x):
        x = self.inp(x)
        Hh = self.mab0(self.I.repeat(x.size(0), 1, 1), x)
        x = self.mab1(x, Hh)
        return self.out(self.pma(self.S.repeat(x.size(0), 1, 1), x).squeeze(1))


EDGES = torch.tensor([[0, 1, 2, 3, 4, 5, 1], [1, 2, 3, 4, 5, 0, 3]])  # a small graph's edge list


def _ids(high: int, *shape: int) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(0))


def _image(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


ZOO: dict[str, tuple[Callable[[], nn.Module], Callable[[], Any], Callable[[], Any]]] = {
    "nanogpt": (GPT, lambda: _ids(256, 1, 32), lambda: _ids(256, 2, 17)),
    "llama (Meta's code)": (Llama, lambda: _ids(256, 1, 32), lambda: _ids(256, 2, 17)),
    "vit (tutorial)": (ViT, lambda: _image(1, 3, 32, 32), lambda: _image(2, 3, 32, 32)),
    "yolov8-style": (YOLO, lambda: _image(1, 3, 64, 64), lambda: _image(2, 3, 96, 96)),
    "unet": (UNet, lambda: _image(1, 3, 64, 64), lambda: _image(2, 3, 32, 32)),
    "convnext-v2 (GRN)": (ConvNeXtV2, lambda: _image(1, 3, 64, 64), lambda: _image(2, 3, 32, 32)),
    "espcn (pixel_shuffle)": (ESPCN, lambda: _image(1, 3, 24, 24), lambda: _image(2, 3, 16, 20)),
    "conformer (glu, MHA)": (Conformer, lambda: _image(1, 50, 40), lambda: _image(2, 37, 40)),
    "text lstm": (TextLSTM, lambda: _ids(1000, 1, 20), lambda: _ids(1000, 3, 9)),
    "fasttext (EmbeddingBag)": (FastText, lambda: (_ids(5000, 30), torch.tensor([0, 12])),
                                lambda: (_ids(5000, 11), torch.tensor([0, 3, 7]))),
    "nn.TransformerEncoder classifier": (TorchTransformerClassifier, lambda: _ids(500, 1, 20), lambda: _ids(500, 3, 11)),
    "nn.Transformer seq2seq (tied)": (Seq2Seq, lambda: (_ids(300, 1, 12), _ids(300, 1, 9)),
                                      lambda: (_ids(300, 2, 7), _ids(300, 2, 5))),
    "MoE top-2 (index_add_)": (MoE, lambda: _image(2, 10, 16), lambda: _image(3, 7, 16)),
    "einsum attention + RoPE": (EinsumAttention, lambda: _ids(200, 1, 16), lambda: _ids(200, 2, 9)),
    "channel shuffle + SE": (ShuffleBlockNet, lambda: _image(1, 3, 32, 32), lambda: _image(2, 3, 48, 40)),
    "FiLM (two inputs)": (FiLMNet, lambda: (_image(1, 3, 16, 16), _image(1, 8)), lambda: (_image(2, 3, 20, 12), _image(2, 8))),
    "TCN (weight norm, causal pad)": (TCN, lambda: _image(1, 6, 50), lambda: _image(2, 6, 33)),
    "BiGRU + attention pooling": (GRUAttn, lambda: _ids(400, 1, 15), lambda: _ids(400, 2, 8)),
    "GNN (index_add_)": (GNN, lambda: (_image(6, 12), EDGES), lambda: (_image(9, 12), EDGES)),
    "Perceiver (latents, kdim)": (Perceiver, lambda: _image(1, 30, 20), lambda: _image(2, 13, 20)),
    "MobileViT-ish (patch reshape)": (MobileViTish, lambda: _image(1, 3, 32, 32), lambda: _image(2, 3, 16, 24)),
    "multi-task dict output": (DenseHeads, lambda: _image(1, 3, 16, 16), lambda: _image(2, 3, 24, 20)),
    "DETR-style (learned queries)": (DETRish, lambda: _image(1, 3, 32, 32), lambda: _image(2, 3, 24, 40)),
    "GAN discriminator (spectral norm)": (SNDiscriminator, lambda: _image(1, 3, 16, 16), lambda: _image(2, 3, 16, 16)),
    "Siamese (one encoder, two inputs)": (Siamese, lambda: (_image(1, 1, 12, 12), _image(1, 1, 12, 12)),
                                          lambda: (_image(2, 1, 9, 9), _image(2, 1, 9, 9))),
    "PixelUnshuffle + depthwise x2": (SpaceToDepth, lambda: _image(1, 3, 16, 16), lambda: _image(2, 3, 8, 12)),
    "capsules (view to capsules)": (Capsules, lambda: _image(1, 1, 28, 28), lambda: _image(2, 1, 28, 28)),
    "LSTMCell loop": (LSTMCellLoop, lambda: _image(1, 7, 10), lambda: _image(2, 4, 10)),
    "masked_fill / where": (MaskedFill, lambda: torch.tensor([[5, 7, 0, 0]]), lambda: torch.tensor([[1, 2, 3], [4, 0, 0]])),
    "involution (unfold)": (Involution, lambda: _image(1, 3, 8, 8), lambda: _image(2, 3, 6, 10)),
    "attention U-Net gate": (AttentionGate, lambda: _image(1, 3, 16, 16), lambda: _image(2, 3, 24, 24)),
    "FPN (torchvision.ops)": (FPNNet, lambda: _image(1, 3, 32, 32), lambda: _image(2, 3, 64, 48)),
    "SE ResNet block (expand_as)": (SEResNet, lambda: _image(1, 3, 16, 16), lambda: _image(2, 3, 12, 20)),
    "DenseNet loop (cat)": (DenseLoop, lambda: _image(1, 3, 16, 16), lambda: _image(2, 3, 8, 12)),
    "ConvLSTM": (ConvLSTM, lambda: _image(1, 4, 3, 8, 8), lambda: _image(2, 3, 3, 6, 10)),
    "MLP-Mixer": (Mixer, lambda: _image(1, 3, 16, 16), lambda: _image(2, 3, 16, 16)),
    "tied autoencoder": (TiedAutoencoder, lambda: _image(1, 1, 16, 16), lambda: _image(2, 1, 8, 12)),
    "PointNet (feature transform)": (PointNet, lambda: _image(1, 3, 50), lambda: _image(2, 3, 37)),
    "Res2Net split": (Res2Net, lambda: _image(1, 3, 8, 8), lambda: _image(2, 3, 10, 6)),
    "namedtuple output": (NamedOut, lambda: _image(1, 3, 8, 8), lambda: _image(2, 3, 10, 6)),
    "KimCNN (conv1d, max over time)": (KimCNN, lambda: _ids(500, 1, 20), lambda: _ids(500, 3, 11)),
    "MBConv by hand (drop path)": (MBConvNet, lambda: _image(1, 3, 16, 16), lambda: _image(2, 3, 20, 12)),
    "spatial transformer (grid_sample)": (STN, lambda: _image(1, 1, 28, 28), lambda: _image(2, 1, 28, 28)),
    "VAE (chunk, view to self.c)": (VAE, lambda: _image(1, 1, 28, 28), lambda: _image(2, 1, 28, 28)),
    "WaveNet (gates, skips)": (WaveNet, lambda: _image(1, 1, 40), lambda: _image(2, 1, 23)),
    "deformable conv (DCNv2)": (DeformNet, lambda: _image(1, 3, 12, 12), lambda: _image(2, 3, 10, 14)),
    "Swin by hand (roll, windows)": (SwinByHand, lambda: _image(1, 3, 32, 32), lambda: _image(2, 3, 32, 48)),
    "CLIP-style dual encoder": (CLIPish, lambda: (_image(2, 3, 16, 16), _ids(300, 2, 7)),
                                lambda: (_image(3, 3, 16, 16), _ids(300, 4, 5))),
    "DLRM (dot interaction)": (DLRM, lambda: (_image(2, 13), _ids(100, 2, 3)), lambda: (_image(5, 13), _ids(100, 5, 3))),
    "raw-parameter layers": (RawParams, lambda: _image(1, 3, 12, 12), lambda: _image(2, 3, 10, 14)),
    "DCGAN generator (Unflatten)": (DCGAN, lambda: _image(2, 16), lambda: _image(3, 16)),
    "temporal shift (TSM)": (TSM, lambda: _image(1, 4, 3, 8, 8), lambda: _image(2, 4, 3, 6, 10)),
    "GhostNet by hand (cat, slice)": (GhostNetByHand, lambda: _image(1, 3, 12, 12), lambda: _image(2, 3, 10, 14)),
    "MixConv (split at a list)": (MixConvNet, lambda: _image(1, 3, 12, 12), lambda: _image(2, 3, 10, 14)),
    "orthogonal RNN (parametrization)": (OrthogonalRNN, lambda: _image(2, 6, 10), lambda: _image(3, 4, 10)),
    "ALiBi attention (B * heads, baddbmm)": (AlibiLM, lambda: _ids(200, 2, 12), lambda: _ids(200, 3, 9)),
    "fairseq attention (time-first)": (FairseqLM, lambda: _ids(100, 3, 7), lambda: _ids(100, 2, 5)),
    "Annotated Transformer": (AnnotatedEncoder, lambda: (_ids(100, 3, 7), torch.ones(3, 1, 7)),
                              lambda: (_ids(100, 2, 5), torch.ones(2, 1, 5))),
    "packed LSTM (pack_padded_sequence)": (PackedLSTM, lambda: (_ids(100, 3, 6), torch.tensor([6, 4, 2])),
                                           lambda: (_ids(100, 2, 5), torch.tensor([5, 3]))),
    "DDPM U-Net (time embedding, attention)": (DDPMUNet, lambda: (_image(2, 3, 16, 16), torch.tensor([3, 500])),
                                               lambda: (_image(1, 3, 8, 8), torch.tensor([7]))),
    "VQ-VAE (codebook, cdist)": (VQVAE, lambda: _image(1, 1, 16, 16), lambda: _image(2, 1, 8, 12)),
    "batch dict input": (DictBatch, lambda: {"image": _image(1, 3, 8, 8), "meta": _image(1, 4)},
                         lambda: {"image": _image(2, 3, 10, 6), "meta": _image(2, 4)}),
    "TorchScript submodule": (WithScripted, lambda: _image(1, 3, 12, 12), lambda: _image(2, 3, 10, 14)),
    "BiFPN (weighted fusion)": (BiFPN, lambda: _image(1, 3, 32, 32), lambda: _image(2, 3, 64, 48)),
    "Meta's Llama code, kv heads = heads": (lambda: Llama(n_heads=8, n_kv_heads=8), lambda: _ids(256, 1, 32),
                                            lambda: _ids(256, 2, 17)),
    "Meta's Llama code, one kv head (MQA)": (lambda: Llama(n_heads=8, n_kv_heads=1), lambda: _ids(256, 1, 32),
                                             lambda: _ids(256, 2, 17)),
    "GQA by expand + reshape, 8 heads of 8": (GQALM, lambda: _ids(100, 1, 12), lambda: _ids(100, 2, 7)),
    "MQA by expand + reshape": (MQALM, lambda: _ids(100, 1, 12), lambda: _ids(100, 2, 7)),
    "SKNet (view(B, self.M, self.c, 1, 1))": (SKConv, lambda: _image(1, 3, 12, 12), lambda: _image(2, 3, 8, 10)),
    "nn.Bilinear": (BilinearNet, lambda: (_image(3, 10), _image(3, 6)), lambda: (_image(5, 10), _image(5, 6))),
    "FNO (complex spectral weights)": (FNO, lambda: _image(1, 16, 16, 3), lambda: _image(2, 12, 20, 3)),
    "CRNN (conv to BiLSTM)": (CRNN, lambda: _image(1, 1, 16, 40), lambda: _image(2, 1, 16, 24)),
    "PixelCNN (weight * mask)": (PixelCNN, lambda: _image(1, 1, 8, 8), lambda: _image(2, 1, 6, 10)),
    "StyleGAN2 modulated conv": (StyleGen, lambda: _image(2, 16), lambda: _image(3, 16)),
    "Set Transformer (heads by split and cat)": (SetTransformer, lambda: _image(2, 7, 3), lambda: _image(3, 5, 3)),
}
