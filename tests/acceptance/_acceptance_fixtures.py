"""Real inputs a new user would bring, written to disk: an image folder, a text file, a tiny
Hugging Face causal LM with its tokenizer, and a model defined in the user's own ``.py`` file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

# NOTE: English sentences for the language-model test, written out rather than downloaded.
_SENTENCES = (
    "The model is pruned to half its width and then fine-tuned on a small text file.",
    "A smaller network runs faster on the same processor when its layers keep wide shapes.",
    "Every saved folder holds the weights and one manifest that says how they were made.",
    "Perplexity is the exponential of the mean loss over the tokens of the held-out text.",
    "Attention heads and feed-forward neurons are removed together with every weight that reads them.",
    "The configuration follows the layers, so the library that made the model can load it again.",
)


def write_image_folder(root: Path, *, per_class: int = 12, classes: int = 10) -> Path:
    """Fashion-MNIST test images as PNG files in one folder per class (``root/<class>/<i>.png``)."""
    from PIL import Image

    from prunekit.data.fashion_mnist import load_fashion_mnist

    splits = load_fashion_mnist()
    images, labels = splits.test.tensors
    # NOTE: undo the normalisation so the PNGs hold ordinary 0-255 greyscale pixels.
    pixels = images.flatten(1)
    lo, hi = pixels.min(1).values[:, None], pixels.max(1).values[:, None]
    pixels = ((pixels - lo) / (hi - lo).clamp_min(1e-6) * 255).round().to(dtype=images.dtype)
    pixels = pixels.reshape(images.shape)
    counts = dict.fromkeys(range(classes), 0)
    for image, label in zip(pixels, labels.tolist(), strict=True):
        if label >= classes or counts[label] >= per_class:
            continue
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        array = image[0].numpy().astype(np.uint8)
        Image.fromarray(array, mode="L").save(folder / f"{counts[label]:03d}.png")
        counts[label] += 1
        if all(c >= per_class for c in counts.values()):
            break
    return root


def write_text_file(path: Path, *, repeats: int = 40) -> Path:
    """A plain English text file of a few kilobytes."""
    rng = np.random.default_rng(0)
    lines = [_SENTENCES[i] for i in rng.integers(0, len(_SENTENCES), size=repeats * len(_SENTENCES))]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_tiny_causal_lm(folder: Path, corpus: Path, *, architecture: str = "gpt2") -> Path:
    """A randomly initialised GPT-2 (or Llama) of a few hundred thousand parameters, with a
    word-level tokenizer trained on ``corpus``, saved as a local Hugging Face folder."""
    import tokenizers
    import torch
    import transformers
    from tokenizers import models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train([str(corpus)], trainers.WordLevelTrainer(special_tokens=["[UNK]", "[EOS]"]))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                                eos_token="[EOS]", pad_token="[EOS]")
    vocab = len(fast)
    if architecture == "gpt2":
        config = transformers.GPT2Config(vocab_size=vocab, n_embd=64, n_head=4, n_layer=2,
                                         n_positions=64, eos_token_id=1, bos_token_id=1)
        model_class = transformers.GPT2LMHeadModel
    else:
        config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=64, num_attention_heads=4,
                                          num_key_value_heads=2, intermediate_size=128,
                                          num_hidden_layers=2, max_position_embeddings=64,
                                          eos_token_id=1, bos_token_id=1, pad_token_id=1)
        model_class = transformers.LlamaForCausalLM
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = model_class(config)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def write_model_file(path: Path) -> Path:
    """A user's own model class and factory in a ``.py`` file (``my_model.py:build``)."""
    path.write_text(textwrap.dedent('''
        """A user's network: not in any registry prunekit knows."""
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
                super().__init__()
                self.features = nn.Sequential(
                    nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                    nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
                    nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
                self.head = nn.Linear(32, num_classes)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.head(self.features(x).mean((2, 3)))


        def build(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
            return Net(num_classes, in_channels)
    '''))
    return path
