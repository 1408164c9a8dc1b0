"""Plain-text rendering of pipeline results for the terminal (no computation here)."""

from __future__ import annotations

from typing import Any

from prunekit.measure import Profile, compare

__all__ = ["print_profile", "print_training"]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:6.2f} %"


def print_training(results: dict[str, Any]) -> None:
    """One line per epoch (train/val loss and accuracy), then the test result and wall time."""
    train = results["train"]
    print(f"{'epoch':>5}  {'train loss':>10}  {'train acc':>9}  {'val loss':>9}  {'val acc':>9}  {'lr':>9}")
    for row in train["history"]:
        print(f"{row['epoch'] + 1:>5}  {row['train_loss']:>10.4f}  {_pct(row['train_accuracy']):>9}  "
              f"{row['val_loss']:>9.4f}  {_pct(row['val_accuracy']):>9}  {row.get('lr', float('nan')):>9.2e}")
    test = train.get("test")
    if test:
        print(f"test accuracy {_pct(test['accuracy']).strip()}  loss {test['loss']:.4f}  "
              f"({test['count']} samples)")
    print(f"wall time {train['wall_time_s']:.1f} s")


def print_profile(results: dict[str, Any]) -> None:
    """The trained model's profile table."""
    print()
    print(compare(Profile.from_dict(results["profile"])))
