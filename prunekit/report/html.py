"""One self-contained HTML page: inline CSS, inline PNG data URIs, no script, font or address outside it.

The filter gallery and the head map are HTML (a grid of tiles, a table), so every removed filter and
head is an element a reader, and a test, can find: ``class="removed"`` with ``data-channel`` or
``data-layer``/``data-head``.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.image import imsave

from prunekit.measure import LatencyControl
from prunekit.report.plots import Figure
from prunekit.report.results import Row

__all__ = ["filter_gallery", "head_map", "page", "table"]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}figure{margin:1.5em 0}figcaption{color:#444;font-size:.9em}
img{max-width:100%}.tiles{display:flex;flex-wrap:wrap;gap:6px}.tile{text-align:center;font-size:.75em}
.tile img{width:48px;height:48px;image-rendering:pixelated;border:3px solid #1f77b4}
.tile.removed img{border-color:#d62728;opacity:.55}.heads td{width:2.2em;text-align:center;color:#fff}
.heads td.removed{outline:3px solid #d62728;outline-offset:-3px}.notes{color:#8a5a00}
"""


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}" if unit.startswith("ms") or abs(value) >= 1 else f"{value:.4f}"


def _change(row: Row, controls: Sequence[LatencyControl] = ()) -> str:
    """The after/before cell: a latency row's only where the run's A/A control measured it, as its
    verdict (the two profiles were timed apart; their medians' ratio mixes in the machine's drift)."""
    b, a = row.before, row.after
    if b is None or a is None:
        return "-"
    if row.label in ("accuracy", "top5"):
        return f"{100 * (a - b):+.2f} pp"
    if row.latency is not None:
        control = next((c for c in controls if (c.backend, c.batch_size) == row.latency), None)
        if control is None or control.ratio <= 0:
            return "-"
        band = f"(A/A ±{100 * control.noise:.0f} %)"
        return f"within noise {band}" if control.within_noise else f"{1 / control.ratio:.3f}x {band}"
    return f"{a / b:.3f}x" if b else "-"


def table(rows: Sequence[Row], names: tuple[str, str], controls: Sequence[LatencyControl] = ()) -> str:
    """The before/after table with an after/before column (latency: the A/A ``controls``' verdict)."""
    head = f"<tr><th></th><th>{html.escape(names[0])}</th><th>{html.escape(names[1])}</th><th>after/before</th></tr>"
    body = "".join(f"<tr><td>{html.escape(r.label)}{' (' + html.escape(r.unit) + ')' if r.unit else ''}</td>"
                   f"<td>{_number(r.before, r.unit)}</td><td>{_number(r.after, r.unit)}</td>"
                   f"<td>{_change(r, controls)}</td></tr>"
                   for r in rows)
    return f"<table>{head}{body}</table>"


def _tile(values: Any) -> str:
    array = np.asarray(values, dtype=float)
    low, high = float(array.min()), float(array.max())
    array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    buffer = io.BytesIO()
    imsave(buffer, array, cmap="gray", format="png") if array.ndim == 2 else imsave(buffer, array, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def filter_gallery(gallery: Mapping[str, Any]) -> Figure:
    """The first convolution's filters as tiles, the removed ones outlined red and faded."""
    removed = set(gallery["removed"])
    tiles = []
    for channel, weights in enumerate(gallery["filters"]):
        state = "removed" if channel in removed else "kept"
        alt = f"filter {channel} ({state})"
        tiles.append(f'<div class="tile {state}" data-channel="{channel}"><img src="{_tile(weights)}" '
                     f'alt="{alt}"><br>{channel}{" &#x2715;" if channel in removed else ""}</div>')
    count = len(gallery["filters"])
    key = f"{len(removed)} of {count} filters removed" + (f" ({', '.join(map(str, sorted(removed)))})" if removed
                                                           else "")
    layer = gallery["layer"]
    return Figure("gallery", "First-layer filters", f"Gallery of the {count} filters of {layer}; {key}.",
                  f"Filters of the first convolution ({layer}), each scaled to its own range; red, faded "
                  f"and marked \u2715: removed. {key}.", f'<div class="tiles">{"".join(tiles)}</div>')


def head_map(heads: Mapping[str, Any]) -> Figure:
    """Layer x head table coloured by importance, removed heads outlined red and marked."""
    removed = {(r, h) for r, h in heads["removed"]}
    values = [v for row in heads["importance"] for v in row if v is not None]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    colours = colormaps["viridis"]
    rows = []
    for index, (layer, scores) in enumerate(zip(heads["layers"], heads["importance"], strict=True)):
        cells = []
        for head, value in enumerate(scores):
            shade = 0.5 if value is None or high <= low else (value - low) / (high - low)
            r, g, b, _ = colours(shade)
            state = "removed" if (index, head) in removed else "kept"
            title = f"{layer} head {head}: {'unscored' if value is None else f'{value:.4g}'} ({state})"
            cells.append(f'<td class="{state}" data-layer="{index}" data-head="{head}" title="{html.escape(title)}" '
                         f'style="background:rgb({r * 255:.0f},{g * 255:.0f},{b * 255:.0f})">'
                         f'{"&#x2715;" if state == "removed" else ""}</td>')
        rows.append(f"<tr><th>{html.escape(layer)}</th>{''.join(cells)}</tr>")
    width = max((len(s) for s in heads["importance"]), default=0)
    top = "".join(f"<th>{h}</th>" for h in range(width))
    total = sum(len(s) for s in heads["importance"])
    key = f"{len(removed)} of {total} heads removed"
    body = f'<table class="heads"><tr><th>layer</th>{top}</tr>{"".join(rows)}</table>'
    return Figure("heads", "Attention heads", f"Table of importance per layer and head; {key}.",
                  f"Importance of each attention head (dark: low, yellow: high); outlined red and marked "
                  f"\u2715: removed. {key}.", body)


def _figure(figure: Figure) -> str:
    """One figure's section; its title, alt text and caption are plain text (names from the run's files
    in them, e.g. a layer called ``<img src=...>``, stay text)."""
    return (f'<section id="{figure.key}"><h2>{html.escape(figure.title)}</h2><figure role="group" '
            f'aria-label="{html.escape(figure.alt)}">{figure.body}<figcaption>{html.escape(figure.caption)}'
            f"</figcaption></figure></section>")


def page(title: str, summary: str, overview: str, figures: Sequence[Figure], notes: Sequence[str]) -> str:
    """The whole page: title, one-line summary, the before/after table, the figures and any notes."""
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>{overview}"
            + "".join(_figure(f) for f in figures)
            + (f'<section id="notes"><h2>Notes</h2><ul class="notes">{notes_html}</ul></section>' if notes else "")
            + "</body></html>\n")
