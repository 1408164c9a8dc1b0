"""A fixture text and a tiny word-level tokenizer trained on it offline (no download)."""

from __future__ import annotations

from pathlib import Path

TEXT = "\n".join(
    f"the {animal} sat on the {thing} number {i} and then the {animal} slept"
    for i, (animal, thing) in enumerate(
        [("cat", "mat"), ("dog", "rug"), ("bird", "branch"), ("fox", "log")] * 5)
) + "\n"


def save_tokenizer(folder: Path, text: str = TEXT) -> Path:
    """Train a WordLevel tokenizer on ``text`` and save it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]"])
    tokenizer.train_from_iterator(text.splitlines(), trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]")
    wrapped.save_pretrained(str(folder))
    return folder
