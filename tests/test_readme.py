"""The README's Python examples run as written (in a temporary folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples() -> None:
    assert _python_blocks(), "README.md should show a library quick-start"


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_example_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(_python_blocks()[index], f"README.md[python block {index}]", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip(), "the example should print its result"
