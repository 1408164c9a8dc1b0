"""The reports of a tiny prune run (`make demo`'s second command) and of a tiny recipe run open in
headless Chromium: no console error, every image loaded, a page that is not blank, no network request."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at "
                                "/usr/bin/chromium: run scripts/ensure_chromium.sh (as root) to run this test")


def _open(page_file: Path) -> dict[str, object]:
    """Load the page in headless Chromium; every request is routed and recorded, only file: and data:
    are let through."""
    from PIL import Image
    from playwright.sync_api import Route, sync_playwright

    requests: list[str] = []
    errors: list[str] = []

    def route(r: Route) -> None:
        url = r.request.url
        requests.append(url)
        if url.startswith(("file:", "data:")):
            r.continue_()
        else:
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.route("**/*", route)
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_file.resolve().as_uri(), wait_until="load")
            widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=float)
    return {"requests": requests, "errors": errors, "widths": widths, "variance": float(pixels.var()),
            "height": pixels.shape[0]}


@pytest.mark.parametrize("run", ["prune_run", "recipe_run"])
def test_the_report_opens_offline_in_chromium(run: str, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(run)
    seen = _open(folder / "report.html")
    assert seen["errors"] == []
    widths = seen["widths"]
    assert isinstance(widths, list) and len(widths) >= 5 and all(w > 0 for w in widths), widths
    assert float(seen["variance"]) > 100.0 and int(seen["height"]) > 1500  # type: ignore[arg-type]
    other = [url for url in seen["requests"] if not url.startswith(("file:", "data:"))]  # type: ignore[attr-defined]
    assert other == [], other
    assert seen["requests"], "the page's own file request was not recorded"
