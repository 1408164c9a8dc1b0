"""Plain-text rendering of pipeline results for the terminal (no computation here)."""

from __future__ import annotations

from typing import Any

from prunekit.measure import Profile, compare

__all__ = ["counted", "print_profile", "print_training"]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:6.2f} %"


def _cell(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    return _pct(value).strip() if name.endswith(("accuracy", "top5")) else f"{value:.4f}"


def counted(count: int, task: str | None) -> str:
    """``10000 samples``, or ``1426 predicted tokens`` for a language model (its count is of tokens)."""
    return f"{count} {'predicted tokens' if task == 'causal_lm' else 'samples'}"


def print_training(results: dict[str, Any]) -> None:
    """One line per epoch (train/val loss and the task's metrics), then the test result and wall time."""
    train = results["train"]
    history = train["history"]
    columns = [k for k in dict.fromkeys(k for row in history for k in row) if k not in ("epoch", "lr")]
    widths = [max(len(c), 9) for c in columns]
    print("  ".join([f"{'epoch':>5}", *(f"{c.replace('_', ' '):>{w}}" for c, w in zip(columns, widths)),
                     f"{'lr':>9}"]))
    for row in history:
        cells = [f"{_cell(c, row.get(c)):>{w}}" for c, w in zip(columns, widths)]
        print("  ".join([f"{row['epoch'] + 1:>5}", *cells, f"{row.get('lr', float('nan')):>9.2e}"]))
    test = train.get("test")
    if test:
        # NOTE: the headline first: accuracy for a classifier, then the rest as the task reports them.
        names = sorted((k for k in test if k != "count"), key=lambda k: k != "accuracy")
        metrics = "  ".join(f"{k} {_cell(k, test[k])}" for k in names)
        print(f"test {metrics}  ({counted(test['count'], results.get('task'))})")
    print(f"wall time {train['wall_time_s']:.1f} s")


def print_profile(results: dict[str, Any]) -> None:
    """The trained model's profile table."""
    print()
    print(compare(Profile.from_dict(results["profile"])))
