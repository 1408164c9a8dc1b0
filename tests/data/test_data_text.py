"""load_text: a plain text file tokenised with the model's tokenizer into causal-LM token blocks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _text_files import TEXT, save_tokenizer

from prunekit import data
from prunekit.errors import ConfigError, DataError, DataNotFoundError
from prunekit.tasks import CausalLM


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_blocks_hold_the_tokenised_text_in_order(text_file: Path, tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    loaders = data.load_text(text_file, tokenizer_dir, block_size=16, batch_size=4, val_fraction=0.25)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    ids = [t for line in TEXT.splitlines(keepends=True) for t in tok(line, add_special_tokens=False)["input_ids"]]
    n = len(ids) // 16
    assert loaders.info["tokens"] == len(ids) and loaders.task == "causal_lm"
    assert loaders.info["vocab_size"] == len(tok)
    assert loaders.info["train_blocks"] + loaders.info["val_blocks"] == n
    assert loaders.info["val_blocks"] == round(n * 0.25)
    val = torch.cat([b["input_ids"] for b in loaders.val])
    assert val.flatten().tolist() == ids[(n - len(val)) * 16:n * 16]  # the tail, in order
    train = torch.cat([b["input_ids"] for b in loaders.train])
    assert sorted(map(tuple, train.tolist())) == sorted(
        tuple(ids[i * 16:(i + 1) * 16]) for i in range(n - len(val)))
    batch = next(iter(loaders.train))
    assert batch["input_ids"].shape == (4, 16) and torch.equal(batch["attention_mask"], torch.ones(4, 16, dtype=torch.long))


def test_same_seed_same_order_and_the_task_reads_the_batches(text_file: Path, tokenizer_dir: Path) -> None:
    def order(seed: int) -> list[list[int]]:
        loaders = data.load_text(text_file, tokenizer_dir, block_size=8, batch_size=2, seed=seed)
        return [b["input_ids"][0].tolist() for b in loaders.train]

    assert order(0) == order(0) and order(0) != order(1)
    loaders = data.load(str(text_file), tokenizer=str(tokenizer_dir), block_size=8, batch_size=2)
    model = torch.nn.Sequential(torch.nn.Embedding(loaders.info["vocab_size"], 4),
                                torch.nn.Linear(4, loaders.info["vocab_size"]))
    metrics = CausalLM().evaluate(model, loaders.val)
    assert metrics["count"] == loaders.info["val_blocks"] * 7


def test_empty_and_missing_files_are_clear(tmp_path: Path, tokenizer_dir: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n")
    with pytest.raises(DataError, match="empty.txt' is empty"):
        data.load_text(empty, tokenizer_dir)
    with pytest.raises(DataNotFoundError, match="does not exist"):
        data.load_text(tmp_path / "missing.txt", tokenizer_dir)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match="UTF-8"):
        data.load_text(binary, tokenizer_dir)


def test_too_little_text_and_bad_options(text_file: Path, tokenizer_dir: Path) -> None:
    with pytest.raises(DataError, match="block_size=4096.*smaller block_size"):
        data.load_text(text_file, tokenizer_dir, block_size=4096)
    with pytest.raises(ConfigError, match="block_size"):
        data.load_text(text_file, tokenizer_dir, block_size=1)
    with pytest.raises(ConfigError, match="batch_size"):
        data.load_text(text_file, tokenizer_dir, batch_size=0)


def test_folder_without_tokenizer_says_how_to_fix(text_file: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    with pytest.raises(DataError, match=r"has no tokenizer.*save_pretrained"):
        data.load_text(text_file, model_dir)
    with pytest.raises(DataError, match="has no tokenizer"):
        data.load_text(text_file, model_dir / "config.json")  # a file names its folder
    with pytest.raises(DataNotFoundError, match="Tokenizer folder"):
        data.load_text(text_file, tmp_path / "nowhere")


def test_a_tokenizer_object_or_plain_callable(text_file: Path) -> None:
    words: dict[str, int] = {}

    def tokenize(lines: list[str]) -> list[list[int]]:
        return [[words.setdefault(w, len(words)) for w in line.split()] for line in lines]

    loaders = data.load_text(text_file, tokenize, block_size=8, val_fraction=0.0)
    assert loaders.val is None and loaders.info["val_blocks"] == 0
    assert loaders.info["tokens"] == len(TEXT.split())


def test_bytes_reads_the_text_as_utf8_bytes(text_file: Path) -> None:
    loaders = data.load(str(text_file), tokenizer="bytes", block_size=8, val_fraction=0.0)
    assert loaders.info["vocab_size"] == 256 and loaders.task == "causal_lm"
    assert loaders.info["tokens"] == len(TEXT.encode("utf-8"))
    first = next(iter(loaders.train.dataset))["input_ids"]
    assert bytes(first.tolist()) == TEXT.encode("utf-8")[:8]
    assert loaders.info["tokenizer"].decode(first.tolist()) == TEXT[:8]


def test_a_text_file_without_a_tokenizer_names_both_fixes(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ConfigError, match=r"--tokenizer FOLDER; tokenizer= in Python\), or 'bytes'"):
        data.load(str(text))
