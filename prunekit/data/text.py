"""A plain text file for causal language modelling, tokenised with the model's own tokenizer.

The text is tokenised line by line (as Hugging Face's ``run_clm`` does), the token ids are joined
and cut into blocks of ``block_size``; the last ``val_fraction`` of the blocks is held out for
validation (a contiguous tail, so no sentence is split between train and val). Batches are dicts
``{"input_ids": [B, block_size], "attention_mask": ones}``, what ``prunekit.tasks.CausalLM`` takes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from prunekit.data.loaders import Loaders
from prunekit.errors import ConfigError, DataError, DataNotFoundError, require

__all__ = [
    "BYTES",
    "ByteTokenizer",
    "TOKENIZER_FILES",
    "TokenBlocks",
    "load_text",
    "load_tokenizer",
    "text_loaders",
    "to_blocks",
    "tokenize_lines",
]

# NOTE: any one of these in a folder means a tokenizer was saved there (fast, BPE, SentencePiece,
# WordPiece layouts).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model",
                   "vocab.txt", "spiece.model", "sentencepiece.bpe.model")


class TokenBlocks(Dataset):
    """``[N, T]`` token ids as samples ``{"input_ids": [T], "attention_mask": [T]}``."""

    def __init__(self, blocks: torch.Tensor) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = self.blocks[index]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


BYTES = "bytes"  # the tokenizer name that reads a text as its UTF-8 bytes


class ByteTokenizer:
    """A text's UTF-8 bytes as token ids (a vocabulary of 256): for a language model of your own that
    has no tokenizer; ``decode`` turns ids back into text."""

    def __len__(self) -> int:
        return 256

    def __call__(self, lines: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
        return [list(line.encode("utf-8")) for line in lines]

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer()"


def load_tokenizer(source: str | os.PathLike[str] | Any) -> Any:
    """The tokenizer saved in a local folder (``AutoTokenizer``, no download), a
    :class:`ByteTokenizer` for ``"bytes"``, or ``source`` itself when it already is a tokenizer
    (anything callable on a list of strings)."""
    if isinstance(source, str) and source == BYTES:
        return ByteTokenizer()
    if not isinstance(source, (str, os.PathLike)):
        if not callable(source):
            raise ConfigError(f"tokenizer must be a folder holding a saved tokenizer or a tokenizer "
                              f"object; got {type(source).__name__}. Fix: pass the model's folder.")
        return source
    folder = Path(source).expanduser()
    if folder.is_file():
        folder = folder.parent  # NOTE: a config.json or weights file names its folder
    if not folder.is_dir():
        raise DataNotFoundError(f"Tokenizer folder '{folder}' does not exist. Fix: pass the folder "
                                f"the model and its tokenizer were saved in.")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise DataError(
            f"'{folder}' has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); a text file must "
            f"be tokenised with the model's own tokenizer. Fix: save it beside the model with "
            f"tokenizer.save_pretrained('{folder}'), or pass the folder that holds it as tokenizer.")
    transformers = require("transformers", extra="hf", feature="Tokenising a text file")
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise DataError(f"'{folder}': the tokenizer could not be loaded ({reason}). Fix: re-save it "
                        f"with tokenizer.save_pretrained.") from None


def tokenize_lines(tokenizer: Any, lines: Sequence[str]) -> list[int]:
    """Every line's token ids (no special tokens), joined into one list.

    ``tokenizer(lines)`` may return a Hugging Face ``BatchEncoding`` (its ``input_ids`` are used)
    or a list of id lists.
    """
    if not lines:
        return []
    try:
        encoded = tokenizer(list(lines), add_special_tokens=False)
    except TypeError:  # NOTE: a plain callable without Hugging Face's keyword.
        encoded = tokenizer(list(lines))
    rows = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
    return [int(token) for row in rows for token in row]


def _read(path: Path) -> str:
    if not path.exists():
        raise DataNotFoundError(f"Text file '{path}' does not exist. Fix: check the path.")
    if path.is_dir():
        raise DataError(f"'{path}' is a folder; expected a plain text file. Fix: pass the file.")
    try:
        text = path.read_text(encoding="utf-8-sig")  # NOTE: -sig: a leading BOM (Windows editors) is no text
    except UnicodeDecodeError as exc:
        raise DataError(f"'{path}': expected UTF-8 text, found undecodable bytes ({exc.reason} at "
                        f"byte {exc.start}). Fix: convert it, e.g. iconv -t utf-8.") from None
    if not text.strip():
        raise DataError(f"Text file '{path}' is empty; expected plain text to train and evaluate a "
                        f"language model on. Fix: pass a file with text in it.")
    return text


def to_blocks(ids: list[int], block_size: int, val_fraction: float, path: Path,
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) ``[N, block_size]`` blocks; val is the tail."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2:
        raise ConfigError(f"block_size must be a whole number >= 2 (tokens per sample); got "
                          f"{block_size!r}. Pass e.g. 128.")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1); got {val_fraction}. Pass e.g. 0.1.")
    n = len(ids) // block_size
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n - n_val < 1:
        raise DataError(f"'{path}' has {len(ids)} tokens: {n} block(s) of block_size={block_size}; "
                        f"expected at least {n_val + 1} (train{' + val' if n_val else ''}). Fix: "
                        f"pass a smaller block_size, or more text.")
    blocks = torch.tensor(ids[:n * block_size], dtype=torch.long).reshape(n, block_size)
    return blocks[:n - n_val], blocks[n - n_val:]


def text_loaders(name: str, train: torch.Tensor, val: torch.Tensor, *, batch_size: int, seed: int,
                 info: dict[str, Any]) -> Loaders:
    """Loaders over token blocks: train shuffled by a generator seeded with ``seed``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer; got {batch_size!r}. Pass e.g. 8.")
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(TokenBlocks(train), batch_size=batch_size, shuffle=True,
                              generator=generator)
    val_loader = DataLoader(TokenBlocks(val), batch_size=batch_size) if len(val) else None
    return Loaders(name=name, train=train_loader, val=val_loader, task="causal_lm",
                   info={**info, "block_size": int(train.shape[1]), "train_blocks": len(train),
                         "val_blocks": len(val)})


def load_text(path: str | os.PathLike[str], tokenizer: str | os.PathLike[str] | Any, *,
              block_size: int = 128, batch_size: int = 8, val_fraction: float = 0.1,
              seed: int = 0) -> Loaders:
    """Token blocks of a UTF-8 text file for causal LM training and evaluation.

    Args:
        tokenizer: the folder the model's tokenizer was saved in (``hf:PATH`` models: that
            folder), ``"bytes"`` (UTF-8 bytes as ids, for a model without a tokenizer), or a
            tokenizer object.
        block_size: tokens per sample; the leftover tail of the text is dropped.
        val_fraction: share of the blocks held out (the last ones; at least one when > 0).
    Returns:
        :class:`Loaders` with dict batches, ``task="causal_lm"`` and ``info`` holding
        ``vocab_size``, ``tokens``, ``block_size`` and the block counts.
    """
    file = Path(path).expanduser()
    text = _read(file)
    tok = load_tokenizer(tokenizer)
    ids = tokenize_lines(tok, text.splitlines(keepends=True))
    if not ids:
        raise DataError(f"'{file}' gave no tokens with this tokenizer; expected text it can encode. "
                        f"Fix: check that the tokenizer belongs to the model and the file is text.")
    train, val = to_blocks(ids, block_size, val_fraction, file)
    vocab = len(tok) if hasattr(tok, "__len__") else None
    return text_loaders(file.stem, train, val, batch_size=batch_size, seed=seed,
                        info={"vocab_size": vocab, "tokens": len(ids), "tokenizer": tok})
