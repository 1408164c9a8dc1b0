"""sparsify, decompose and partition write their report at the end, with the figures their data allows."""

from __future__ import annotations

from pathlib import Path

import pytest

from _report_runs import TINY

from prunekit.cli import main


@pytest.mark.parametrize(("argv", "sections"), [
    (["sparsify", "--model", "simple_cnn", "--data", "fashion-mnist", *TINY, "--sparsity", "0.5"],
     ["latency", "sparsity", "classes", "confusion", "attribution"]),
    (["decompose", "--model", "simple_cnn", "--data", "fashion-mnist", *TINY, "--rank", "2"],
     ["latency", "ranks", "curves", "classes", "attribution"]),
    (["partition", "--model", "lenet5", "--stages", "2", "--no-onnx", "--min-time-s", "0", "--no-progress",
      "--threads", "1"], []),
])
def test_each_command_writes_its_report(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                        sections: list[str]) -> None:
    out = tmp_path / "run"
    assert main([*argv, "--out", str(out)]) == 0
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    page = (out / "report.html").read_text()
    for key in sections:
        assert f'<section id="{key}">' in page, key
    assert (out / "report.md").read_text().startswith(f"# prunekit {argv[0]}: ")
    if argv[0] == "sparsify":
        assert '<section id="widths">' not in page  # NOTE: sparsity keeps every width; no empty chart.
        # NOTE: sparsify times no A/A control: no speed-up claimed; its sparse file and non-zeros shown.
        summary = (out / "report.md").read_text()
        assert "not measured against noise" in summary and "x faster" not in summary and "x slower" not in summary
        assert "| non-zero params |" in summary and "| size on disk (bytes, after in sparse format) |" in summary
    if argv[0] == "partition":
        assert "<h2>Stages</h2>" in page
