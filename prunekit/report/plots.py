"""The report's figures, drawn with matplotlib's Agg canvas (no pyplot, no global state) into inline
PNG data URIs. Each function returns a :class:`Figure` (title, alt text, a caption with the key
number, and its HTML), or None when the run lacks the data. Titles, alt texts and captions are plain
text (layer and metric names from the run's files go in as they are): the page escapes them.
"""

from __future__ import annotations

import base64
import html
import io
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator

from prunekit.measure import LatencyControl, Profile, per_class_accuracy
from prunekit.report.results import pareto_front

__all__ = ["Figure", "attribution_grid", "class_accuracy", "confusion_change", "curves", "importance",
           "latency_boxes", "pareto", "png", "ranks", "sensitivity", "sparsity", "widths"]

BEFORE, AFTER, REMOVED = "#7f7f7f", "#1f77b4", "#d62728"
_DPI = 80


@dataclass(frozen=True)
class Figure:
    """One figure of the page: its ``body`` is HTML (an ``<img>`` or a small table); ``title``, ``alt``
    and ``caption`` are plain text, escaped where the page writes them."""

    key: str
    title: str
    alt: str
    caption: str
    body: str


def png(draw: Callable[[MplFigure], None], size: tuple[float, float]) -> str:
    """Draw on a new figure of ``size`` inches and return it as a ``data:image/png;base64`` URI."""
    figure = MplFigure(figsize=size, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # NOTE: a name in a script the font lacks (class names): the caption has it
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        draw(figure)
        figure.savefig(buffer, format="png", dpi=_DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _image(key: str, title: str, alt: str, caption: str, draw: Callable[[MplFigure], None],
           size: tuple[float, float]) -> Figure:
    body = f'<img src="{png(draw, size)}" alt="{html.escape(alt)}">'
    return Figure(key, title, alt, caption, body)


def _which(part: Mapping[str, Any]) -> str:
    """" (LABEL)" when the evidence says which model "before" is."""
    return f" ({part['before_label']})" if part.get("before_label") else ""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _ms(x: float) -> str:
    return f"{x:.3g} ms"


def latency_boxes(before: Profile | None, after: Profile | None,
                  controls: Sequence[LatencyControl] = ()) -> Figure | None:
    """Box plots of every latency measurement, before and after, per backend and batch size; the
    caption's change is the A/A control's verdict when ``controls`` has one (as the CLI prints it), and
    without one no change is claimed (the profiles were timed apart, so their ratio mixes in the drift)."""
    pairs = [(label, s) for label, p in (("before", before), ("after", after)) if p is not None for s in p.latency]
    if not pairs:
        return None
    keys = list(dict.fromkeys((s.backend, s.batch_size) for _, s in pairs))

    def draw(fig: MplFigure) -> None:
        axes = fig.subplots(1, len(keys), squeeze=False)[0]
        for ax, (backend, batch) in zip(axes, keys, strict=True):
            found = [(label, s) for label, s in pairs if (s.backend, s.batch_size) == (backend, batch)]
            if all(s.samples_ms for _, s in found):
                boxes = ax.boxplot([s.samples_ms for _, s in found], whis=(5, 95), showfliers=False,
                                   patch_artist=True, tick_labels=[label for label, _ in found])
            else:  # NOTE: a results.json from before samples were kept: p10-p90 boxes, no whiskers.
                boxes = ax.bxp([{"label": label, "med": s.median_ms, "q1": s.p10_ms, "q3": s.p90_ms,
                                 "whislo": s.p10_ms, "whishi": s.p90_ms} for label, s in found],
                               showfliers=False, patch_artist=True)
            for patch, (label, _) in zip(boxes["boxes"], found, strict=True):
                patch.set_facecolor(BEFORE if label == "before" else AFTER)
            ax.set_title(f"{backend}, batch {batch}", fontsize=9)
            ax.set_ylabel("ms per forward pass")

    first = keys[0]
    b = before.latency_for(*first) if before else None
    a = after.latency_for(*first) if after else None
    control = next((c for c in controls if (c.backend, c.batch_size) == first), None)
    if a and b and a.median_ms > 0 and b.median_ms > 0:
        change = "not measured against noise: the run timed no A/A control, so no speed-up is claimed"
        if control is not None:  # NOTE: the profiles were timed apart; the control's rounds were interleaved
            change = f"against an A/A control: {control.describe()}"
            if control.noisy:
                change += "; the machine was busy, latency ratios are unreliable"
        key = f"median {first[0]} batch {first[1]}: {_ms(b.median_ms)} before, {_ms(a.median_ms)} after ({change})"
    else:
        key = f"{len(pairs)} latency measurements"
    return _image("latency", "Latency", f"Box plots of forward-pass latency per backend and batch size; {key}.",
                  f"Latency of every timed call (box: quartiles, line: median, whiskers: 5th-95th percentile). "
                  f"{key[0].upper() + key[1:]}.", draw, (max(3.0, 2.6 * len(keys)), 3.0))


def _bars(fig: MplFigure, labels: Sequence[str], series: Sequence[tuple[str, Sequence[float], str]],
          ylabel: str) -> None:
    ax = fig.subplots()
    width = 0.8 / len(series)
    for i, (name, values, color) in enumerate(series):
        ax.bar([x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))], values, width,
               label=name, color=color)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(fontsize=8)


def _wide(count: int) -> tuple[float, float]:
    return (min(14.0, max(4.0, 0.3 * count + 2)), 3.4)


def widths(rows: Sequence[Mapping[str, Any]]) -> Figure | None:
    """Bars of each layer's output channels before and after."""
    if not rows:
        return None
    total_b, total_a = sum(r["before"] for r in rows), sum(r["after"] for r in rows)
    narrowed = sum(r["after"] < r["before"] for r in rows)
    key = f"{narrowed} of {len(rows)} layers narrowed; {total_b} -> {total_a} output channels in all"
    return _image("widths", "Per-layer widths", f"Bar chart of output channels per layer before and after; {key}.",
                  f"Output channels of each Conv/Linear layer (a recurrent layer's: its hidden units), before "
                  f"(grey) and after (blue). {key}.",
                  lambda fig: _bars(fig, [r["layer"] for r in rows],
                                    [("before", [r["before"] for r in rows], BEFORE),
                                     ("after", [r["after"] for r in rows], AFTER)], "output channels"),
                  _wide(len(rows)))


def sparsity(rows: Sequence[Mapping[str, Any]]) -> Figure | None:
    """Bars of each sparsified parameter's fraction of zeros."""
    if not rows:
        return None
    zeros, total = sum(r["zeros"] for r in rows), sum(r["numel"] for r in rows)
    key = f"{100 * zeros / max(total, 1):.1f} % of {total:,} weights are zero"
    return _image("sparsity", "Per-layer sparsity", f"Bar chart of the fraction of zero weights per layer; {key}.",
                  f"Fraction of zero weights in each sparsified parameter. {key}.",
                  lambda fig: _bars(fig, [r["name"] for r in rows],
                                    [("sparsity", [r["sparsity"] for r in rows], AFTER)], "fraction zero"),
                  _wide(len(rows)))


def _rank_bars(row: Mapping[str, Any]) -> list[tuple[str, int, float | None, bool]]:
    """(label, rank, the rank it is measured against, whether that is a break-even rank) for each rank
    of one decomposition record: SVD's against the matrix rank min(out, in x kh x kw), Tucker-2's input
    and output ranks against the input and output channels, CP's against its break-even rank, where its
    MACs equal the layer's (CP's MACs grow linearly with its rank); None where the kind gives no bound."""
    name, kind = row["name"], row.get("kind")
    shape, ranks = list(row.get("shape") or ()), list(row.get("ranks") or ())
    if not ranks:
        return []
    if kind == "tucker2" and len(shape) >= 2 and len(ranks) == 2:
        return [(f"{name} in", ranks[0], shape[1], False), (f"{name} out", ranks[1], shape[0], False)]
    if kind == "cp":
        before, after = row.get("macs_before"), row.get("macs_after")
        return [(f"{name} (CP)", ranks[0], before * ranks[0] / after if before and after else None, True)]
    if kind in ("svd", "asvd") and shape:
        return [(name, ranks[0], min(shape[0], math.prod(shape[1:])) if len(shape) >= 2 else shape[0], False)]
    return [(name, max(ranks), None, False)]


def ranks(rows: Sequence[Mapping[str, Any]]) -> Figure | None:
    """Bars of each factorised layer's ranks against their full rank (CP: its break-even rank)."""
    if not rows:
        return None
    bars = [bar for r in rows for bar in _rank_bars(r)]
    parts = [f"{_count(len(rows), 'layer')} factorised"]
    for even, words in ((False, "rank kept {:.0%} of full on average"),
                        (True, "CP rank {:.0%} of the break-even rank on average")):
        pairs = [(kept, bound) for _, kept, bound, e in bars if bound and e == even]
        if pairs:
            parts.append(words.format(sum(k for k, _ in pairs) / sum(b for _, b in pairs)))
    key = "; ".join(parts)
    return _image("ranks", "Per-layer ranks", f"Bar chart of each factorised layer's rank and full rank; {key}.",
                  f"Rank of each factorised layer (blue) against its full rank (grey): SVD min(out, in x kh x kw), "
                  f"Tucker-2 its input and output ranks against the input and output channels, CP the break-even "
                  f"rank (the rank at which it costs the layer's MACs). {key}.",
                  lambda fig: _bars(fig, [label for label, *_ in bars],
                                    [("full rank", [b or 0.0 for _, _, b, _ in bars], BEFORE),
                                     ("rank", [k for _, k, _, _ in bars], AFTER)], "rank"),
                  _wide(len(bars)))


def _units(row: Mapping[str, Any]) -> tuple[str, int]:
    """What one importance row's scores count, and the channels in each: ("channel", channels per unit),
    ("head", 1), ("hidden unit", 1), or ("unit", 1) for evidence saved before rows said (a unit may then
    be a block)."""
    if row.get("unit") in ("head", "hidden unit"):
        return str(row["unit"]), 1
    if "channels_per_unit" in row:
        return "channel", int(row["channels_per_unit"])
    return "unit", 1


_NOUNS = ("channel", "hidden unit", "head", "unit")


def importance(rows: Sequence[Mapping[str, Any]], limit: int = 12) -> Figure | None:
    """Per group, the unit scores sorted, kept and removed in two colours, with the cut line; counts are
    in channels (a unit that cuts a block of channels counts each) or in heads."""
    if not rows:
        return None
    shown = list(rows[:limit])
    removed: dict[str, int] = {}
    total: dict[str, int] = {}
    for row in rows:
        noun, size = _units(row)
        removed[noun] = removed.get(noun, 0) + size * (len(row["scores"]) - len(row["kept"]))
        total[noun] = total.get(noun, 0) + size * len(row["scores"])
    cols = min(4, len(shown))
    lines = math.ceil(len(shown) / cols)

    def title(row: Mapping[str, Any]) -> str:
        noun, size = _units(row)
        cut, count = len(row["scores"]) - len(row["kept"]), len(row["scores"])
        if size == 1:
            return f"{row['group']} ({cut}/{count} {noun}s cut)"
        return f"{row['group']} ({size * cut}/{size * count} channels cut, blocks of {size})"

    def draw(fig: MplFigure) -> None:
        axes = fig.subplots(lines, cols, squeeze=False).flatten()
        for ax, row in zip(axes, shown, strict=False):
            kept = set(row["kept"])
            order = sorted(range(len(row["scores"])), key=lambda c: row["scores"][c])
            ax.bar(range(len(order)), [row["scores"][c] for c in order], 1.0,
                   color=[AFTER if c in kept else REMOVED for c in order])
            cut = [row["scores"][c] for c in order if c not in kept]
            if cut:
                ax.axhline(max(cut), color="black", linestyle="--", linewidth=1)
            ax.set_title(title(row), fontsize=7)
            ax.tick_params(labelsize=6)
        for ax in axes[len(shown):]:
            ax.set_visible(False)

    counts = " and ".join(f"{removed[n]} of {total[n]} {n}s" for n in _NOUNS if n in total)
    key = f"{counts} removed across {_count(len(rows), 'group')}"
    more = f" (the {limit} most cut groups shown)" if len(rows) > limit else ""
    return _image("importance", "Importance scores", f"Sorted importance per group, kept in blue, "
                  f"removed in red, dashed cut line; {key}.",
                  f"Importance of every unit of each group (a channel, a block of channels cut together, a "
                  f"recurrent layer's hidden unit, or a head), sorted; red units were removed and the dashed line "
                  f"is the highest removed score{more}. {key}.", draw, (2.6 * cols, 2.0 * lines + 0.4))


_HEADLINES = ("val_accuracy", "val_perplexity", "val_cosine")


def _val_metric(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """The validation metric to draw: a built-in task's headline, else the first other ``val_*`` number
    the history holds (a custom task's metric: ``val_mse``), since the training loop writes ``val_<metric>``."""
    held = dict.fromkeys(k for r in rows for k, v in r.items()
                         if isinstance(k, str) and k.startswith("val_") and k != "val_loss"
                         and isinstance(v, (int, float)) and not isinstance(v, bool))
    wanted = [*_HEADLINES, *held]
    return next((m for m in wanted if m in held), None)


def curves(histories: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]) -> Figure | None:
    """Loss and the task's validation metric per epoch, phase after phase (baseline, fine-tune, stages)."""
    points = [(phase, row) for phase, history in histories for row in history]
    if not points:
        return None
    metric = _val_metric([r for _, r in points])

    def draw(fig: MplFigure) -> None:
        left, right = fig.subplots(1, 2)
        for key, ax in (("loss", left), ("metric", right)):
            for phase in dict.fromkeys(p for p, _ in points):
                xs = [i for i, (p, _) in enumerate(points) if p == phase]
                names = ("train_loss", "val_loss") if key == "loss" else (metric,) if metric else ()
                for name in names:
                    ys = [points[i][1].get(name) for i in xs]
                    if any(y is not None for y in ys):
                        ax.plot([x + 1 for x in xs], ys, marker="o", label=f"{phase} {name}")
            ax.set_xlabel("epoch (all phases in order)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(key if key == "loss" else (metric or "no validation metric"), fontsize=9)
            ax.legend(fontsize=6)

    last = next((r[metric] for _, r in reversed(points) if metric and r.get(metric) is not None), None)
    key = f"{_count(len(points), 'epoch')} in {_count(len(histories), 'phase')}"
    if last is not None:
        key += f"; last {metric} {last:.4g}"
    return _image("curves", "Training curves", f"Line charts of loss and {metric or 'metric'} per epoch; {key}.",
                  f"Training and validation curves of every training phase of the run. {key}.", draw, (8.0, 3.0))


def _class_labels(count: int, names: Sequence[str]) -> list[str]:
    """The data's class names when there is one per class, else the class indices."""
    return [str(n) for n in names] if len(names) == count else [str(i) for i in range(count)]


def _tick(label: str) -> str:
    """A class name as matplotlib text: ``$`` escaped, so that a name is never read as mathtext."""
    return label.replace("$", r"\$")


def class_accuracy(classes: Mapping[str, Any], names: Sequence[str] = ()) -> Figure | None:
    """Bars of each class's accuracy before and after, labelled with the data's class ``names`` where known."""
    before, after = per_class_accuracy(classes["before"]), per_class_accuracy(classes["after"])
    change = [(a - b, i) for i, (b, a) in enumerate(zip(before, after, strict=True)) if a is not None and b is not None]
    if not change:
        return None
    labels = _class_labels(len(before), names)
    worst, cls = min(change)
    key = f"class {labels[cls]} lost most: {100 * worst:+.1f} pp" if worst < 0 else \
        f"no class lost accuracy (smallest change: class {labels[cls]}, {100 * worst:+.1f} pp)"
    return _image("classes", "Per-class accuracy", f"Bar chart of accuracy per class before and after; {key}.",
                  f"Accuracy of each class on the test samples, before{_which(classes)} (grey) and after "
                  f"(blue). {key[0].upper() + key[1:]}.",
                  lambda fig: _bars(fig, [_tick(label) for label in labels],
                                    [("before", [b or 0.0 for b in before], BEFORE),
                                     ("after", [a or 0.0 for a in after], AFTER)], "accuracy"),
                  _wide(len(labels)))


def confusion_change(classes: Mapping[str, Any], names: Sequence[str] = ()) -> Figure | None:
    """Heat map of confusion-matrix counts after minus before (rows: true class, columns: predicted),
    labelled with the data's class ``names`` where known."""
    before, after = classes["before"], classes["after"]
    delta = [[a - b for a, b in zip(ra, rb, strict=True)] for ra, rb in zip(after, before, strict=True)]
    n = len(delta)
    if not n:
        return None
    labels = _class_labels(n, names)
    off = [(delta[i][j], i, j) for i in range(n) for j in range(n) if i != j]
    grown = max(off) if off else (0, 0, 0)
    key = (f"largest new confusion: class {labels[grown[1]]} predicted as {labels[grown[2]]} {grown[0]:+d} times"
           if grown[0] > 0 else "no confusion grew")
    span = max(1, max(abs(v) for row in delta for v in row))

    def draw(fig: MplFigure) -> None:
        ax = fig.subplots()
        shown = ax.imshow(delta, cmap="RdBu_r", vmin=-span, vmax=span)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ticks = [_tick(label) for label in labels]
        ax.set_xticks(range(n), ticks, rotation=90 if names else 0, fontsize=7)
        ax.set_yticks(range(n), ticks, fontsize=7)
        fig.colorbar(shown, ax=ax, label="after - before (samples)")

    return _image("confusion", "Change in the confusion matrix", f"Heat map of confusion counts after minus "
                  f"before; {key}.", f"Confusion matrix after minus before{_which(classes)} (red: more samples). "
                  f"{key[0].upper() + key[1:]}.",
                  draw, (4.6, 3.8))


def _displayed(image: Any) -> Any:
    """A [C, H, W] image as imshow takes it: one channel as is (the colour map scales it), three as
    [H, W, 3] scaled into [0, 1] (normalised inputs reach below 0 and above 1; imshow would clip
    them, with a warning per image)."""
    import numpy as np

    pixels = np.asarray(image, dtype=np.float32)
    if pixels.shape[0] != 3:
        return pixels[0]
    low, high = float(pixels.min()), float(pixels.max())
    return np.moveaxis((pixels - low) / (high - low) if high > low else np.zeros_like(pixels), 0, -1)


def attribution_grid(record: Mapping[str, Any]) -> Figure | None:
    """Each fixed image beside its attribution map before and after, with the per-image agreement."""
    images = record.get("images") or []
    if not images:
        return None
    mean = record.get("mean_agreement")

    def draw(fig: MplFigure) -> None:
        axes = fig.subplots(len(images), 3, squeeze=False)
        for row, (image, b, a, score) in enumerate(zip(images, record["before"], record["after"],
                                                       record["agreement"], strict=True)):
            axes[row][0].imshow(_displayed(image), cmap="gray")
            axes[row][1].imshow(b, cmap="inferno")
            axes[row][2].imshow(a, cmap="inferno")
            axes[row][0].set_title(f"image, class {record['targets'][row]}", fontsize=7)
            axes[row][1].set_title("before", fontsize=7)
            axes[row][2].set_title("after" + ("" if score is None else f" (rho {score:.2f})"), fontsize=7)
            for ax in axes[row]:
                ax.axis("off")

    key = "agreement not defined (constant maps)" if mean is None else \
        f"mean Spearman rank correlation of the maps {mean:.3f}"
    return _image("attribution", "Attribution before and after", f"Grid of test images with their "
                  f"{record['method']} maps before and after; {key}.",
                  f"{record['method']} on the first {len(images)} test images, for their true class, "
                  f"before{_which(record)} and after. {key[0].upper() + key[1:]}.", draw,
                  (4.5, 1.5 * len(images) + 0.3))


def sensitivity(data: Mapping[str, Any]) -> Figure | None:
    """One curve per layer: the metric after pruning that layer alone, against the ratio removed."""
    layers = data["layers"]
    metric = data.get("metric", "metric")
    sign = 1.0 if data.get("higher_is_better", True) is not False else -1.0  # NOTE: worst first (MSE: highest)
    ranked = sorted((sign * curve["metric"][-1], curve["metric"][-1], name) for name, curve in layers.items())
    drops = [(value, name) for _, value, name in ranked]
    key = f"most sensitive layer {drops[0][1]} ({metric} {drops[0][0]:.4g} at ratio " \
          f"{layers[drops[0][1]]['ratios'][-1]:.2g})"

    def draw(fig: MplFigure) -> None:
        ax = fig.subplots()
        for name, curve in layers.items():
            ax.plot(curve["ratios"], curve["metric"], marker=".", label=name)
        if data.get("baseline") is not None:
            ax.axhline(data["baseline"], color="black", linestyle="--", linewidth=1, label="baseline")
        ax.set_xlabel("ratio removed")
        ax.set_ylabel(metric)
        ax.legend(fontsize=6, ncol=2)

    return _image("sensitivity", "Sensitivity", f"Line chart of {metric} against the ratio removed per layer; "
                  f"{key}.", f"Sensitivity of each layer: {metric} after pruning it alone. {key}.", draw, (6.0, 3.6))


def pareto(data: Mapping[str, Any]) -> Figure | None:
    """Every trial, the Pareto front and the chosen point."""
    points = data["points"]
    front = pareto_front(points, x_better=data.get("x_better", "lower"), y_better=data.get("y_better", "higher"))
    chosen = data.get("chosen")
    x, y = data.get("x", "x"), data.get("y", "y")

    def draw(fig: MplFigure) -> None:
        ax = fig.subplots()
        ax.scatter([p["x"] for p in points], [p["y"] for p in points], color=BEFORE, s=12, label="trials")
        ax.plot([points[i]["x"] for i in front], [points[i]["y"] for i in front], color=AFTER, marker="o",
                label="Pareto front")
        if chosen is not None:
            ax.scatter([points[chosen]["x"]], [points[chosen]["y"]], color=REMOVED, marker="*", s=160,
                       label="chosen", zorder=3)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.legend(fontsize=7)

    key = f"{len(front)} of {len(points)} trials on the front" + (
        f"; chosen {x} {points[chosen]['x']:.4g}, {y} {points[chosen]['y']:.4g}" if chosen is not None else "")
    return _image("pareto", "Pareto front", f"Scatter of trials by {x} and {y} with the Pareto front; {key}.",
                  f"Every trial of the search, the Pareto front (blue) and the chosen point (red star). {key}.",
                  draw, (5.0, 3.6))
