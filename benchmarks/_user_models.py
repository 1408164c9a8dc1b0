"""Models written the way people write their own (for benchmarks/coverage_user.py).

Each is a small, plain ``nn.Module`` in the style of a well-known code base or tutorial, with the
constructs such code uses: stored head counts and split sizes, fused q|k|v, complex rotary
embeddings, grouped-query attention, recurrent layers, gated units, sub-pixel convolution, bags of
embeddings, skip connections by concatenation. ``ZOO`` maps a name to (builder, example input,
another input of other sizes the pruned model must also take).
"""

from __future__ import annotations

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
}
