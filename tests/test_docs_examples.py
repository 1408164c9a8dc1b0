"""Every ```python block of every documentation page runs as written.

The blocks of one page run in order, in one namespace, in a temporary folder, so a later block
can use the names an earlier one made (the page's set-up block makes small models and batches).
A block may be skipped only when an HTML comment ``<!-- no-test: reason -->`` stands right before
its fence (for what cannot run offline on a CPU in a test, e.g. under torchrun). A block after
``<!-- file: NAME -->`` is a file the reader writes (e.g. ``my_model.py``): it is written to NAME
in the temporary folder, not run, so later blocks can name it in a spec.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
_BLOCK = re.compile(r"(?:<!--\s*(?P<mark>no-test|file):(?P<arg>.*?)-->\s*\n)?```python\n(?P<code>.*?)```", re.S)


def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def _blocks(page: Path) -> list[tuple[str, str | None, str | None]]:
    """The page's python blocks: (code, no-test reason or None, file name or None)."""
    return [(m["code"], m["arg"].strip() if m["mark"] == "no-test" else None,
             m["arg"].strip() if m["mark"] == "file" else None)
            for m in _BLOCK.finditer(page.read_text())]


def _name(page: Path) -> str:
    return str(page.relative_to(DOCS))


def test_the_docs_show_python_examples() -> None:
    with_code = [page for page in _pages() if _blocks(page)]
    assert len(with_code) >= 8, [_name(p) for p in with_code]


def test_skipped_blocks_say_why_and_are_rare() -> None:
    reasons = [reason for page in _pages() for _, reason, _ in _blocks(page) if reason is not None]
    total = sum(len(_blocks(page)) for page in _pages())
    assert all(reasons), "a <!-- no-test: --> comment must give its reason"
    assert len(reasons) <= max(2, total // 10), reasons


@pytest.mark.parametrize("page", [p for p in _pages() if _blocks(p)], ids=_name)
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for index, (code, reason, file) in enumerate(_blocks(page)):
        compiled = compile(code, f"{_name(page)}[python block {index}]", "exec")
        if file:
            (tmp_path / file).write_text(code)
        elif reason is None:
            exec(compiled, namespace)


def _recipes() -> list[tuple[str, str]]:
    """The ```yaml blocks that are recipes (they have ``stages:``), by page."""
    return [(_name(page), block) for page in _pages()
            for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), flags=re.S) if "stages:" in block]


def test_the_docs_show_a_recipe() -> None:
    assert _recipes()


@pytest.mark.parametrize(("page", "text"), _recipes())
def test_recipe_example_validates(page: str, text: str, tmp_path: Path) -> None:
    from prunekit.recipes import STAGE_KINDS, load_recipe

    file = tmp_path / "recipe.yaml"
    file.write_text(text)
    recipe = load_recipe(file)
    assert recipe.stages, page
    assert set(re.findall(r"^  - (\w+):", text, flags=re.M)) <= set(STAGE_KINDS)


def test_the_manifest_guide_matches_the_format() -> None:
    """The saving guide's manifest example has the keys prunekit.save writes, and the guide names
    every transform kind and layout key the format knows."""
    import json

    from prunekit.io.layout import LAYOUT_KEYS
    from prunekit.io.manifest import FORMAT, KINDS, VERSION, Manifest

    text = (DOCS / "guides" / "saving-and-loading.md").read_text()
    example = json.loads(re.findall(r"```json\n(.*?)```", text, flags=re.S)[0])
    written = Manifest(source=None, transforms=(), layout={}).to_dict()
    assert set(example) == set(written)
    assert (example["format"], example["version"]) == (FORMAT, VERSION)
    assert set(example["layout"]) == set(LAYOUT_KEYS)
    assert all(f"`{kind}`" in text for kind in (*KINDS, *LAYOUT_KEYS))
