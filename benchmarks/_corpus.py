"""Real English text available offline: the Debian ``fortunes`` package (apt-get install fortunes).

/usr/share/games/fortunes holds ~40 collections (literature, people, science, wisdom, ...) of
quotations and jokes separated by lines holding only ``%``. Sentences for embedding benchmarks
are single fortunes with the attribution ("-- Mark Twain") removed and whitespace collapsed;
the text for language modelling is the fortunes joined by blank lines. Art collections (ASCII
drawings) are skipped. Splits are deterministic (seeded shuffle of whole fortunes), disjoint.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

FORTUNES = Path("/usr/share/games/fortunes")
SKIP = {"art", "ascii-art"}
SOURCE = "Debian package `fortunes` (/usr/share/games/fortunes, English quotations and jokes)"


def fortunes(root: Path = FORTUNES) -> list[str]:
    """Every fortune text (attribution kept), in file order, deduplicated."""
    if not root.is_dir():
        raise SystemExit(f"{root} is missing: this benchmark needs real English text. "
                         "Install it with: apt-get install -y fortunes")
    seen: dict[str, None] = {}
    for path in sorted(root.iterdir()):
        if path.suffix or path.name in SKIP or not path.is_file():
            continue
        for chunk in path.read_text(encoding="latin-1").split("\n%\n"):
            text = chunk.strip("%\n ").expandtabs(4)
            if text and text.isascii():
                seen.setdefault(text, None)
    return list(seen)


def sentences(*, seed: int = 0, min_chars: int = 30, max_chars: int = 300) -> list[str]:
    """One sentence-like string per fortune: attribution dropped, whitespace collapsed, shuffled."""
    out = []
    for text in fortunes():
        body = re.split(r"\n\s*--", text)[0]
        body = " ".join(body.split())
        if min_chars <= len(body) <= max_chars and sum(c.isalpha() for c in body) > 0.6 * len(body):
            out.append(body)
    random.Random(seed).shuffle(out)
    return out


def split_sentences(n_calibration: int, n_evaluation: int, *, seed: int = 0) -> tuple[list[str], list[str]]:
    """Disjoint calibration and evaluation sentences."""
    pool = sentences(seed=seed)
    if len(pool) < n_calibration + n_evaluation:
        raise SystemExit(f"only {len(pool)} sentences available; asked for {n_calibration + n_evaluation}")
    return pool[:n_calibration], pool[n_calibration:n_calibration + n_evaluation]


def text_splits(*, seed: int = 0, validation: float = 0.1) -> tuple[str, str]:
    """Training and validation text for a language model: whole fortunes, shuffled, split."""
    items = fortunes()
    random.Random(seed).shuffle(items)
    cut = int(len(items) * (1 - validation))
    return "\n\n".join(items[:cut]), "\n\n".join(items[cut:])
