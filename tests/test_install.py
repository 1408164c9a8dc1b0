"""Installation: `pip install .` with no extras must import prunekit and run `prunekit prune`.

The fast test hides every optional package (as ``sys.modules[name] = None`` does: ``import`` fails
with ModuleNotFoundError and ``importlib.util.find_spec`` says "not installed", as in a venv
without them), then imports every prunekit module and runs a tiny `prunekit prune` on simple_cnn.
The slow test builds a real virtual environment; by hand:

    python -m venv /tmp/pk && /tmp/pk/bin/pip install . && \\
    /tmp/pk/bin/prunekit prune --model simple_cnn --ratio 0.5 --baseline-epochs 0 --finetune-epochs 0 \\
        --max-eval-batches 1 --min-time-s 0 --batch-sizes 1 --out /tmp/pk-run
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# NOTE: every package pyproject.toml lists only under [project.optional-dependencies] (and what
# those bring along, e.g. scipy with scikit-learn and tensorly).
OPTIONAL = ("scipy", "sklearn", "timm", "transformers", "datasets", "onnx", "onnxruntime", "onnxscript",
            "tensorly", "PIL", "optuna", "matplotlib", "captum", "torchao", "tensorboard")
# NOTE: modules that import a package a required dependency brings: torchvision requires Pillow.
NEEDS_REQUIRED = {"prunekit.models.torchvision_models": "PIL (torchvision requires pillow)"}
# NOTE: modules whose whole job is an extra's library; their packages (prunekit.quantize,
# prunekit.report) still import, and what uses them asks for the extra in one line.
EXTRA_ONLY = {
    "prunekit.quantize.predict_script": "onnx (the edge bundle's standalone script)",
    "prunekit.quantize.split": "onnx (the int8 edge stage runs in ONNX Runtime)",
    "prunekit.quantize.split_server": "onnx (the server stage runs in ONNX Runtime)",
    "prunekit.report.html": "report (figures are drawn with matplotlib)",
    "prunekit.report.plots": "report",
    "prunekit.report.markdown": "report",
    "prunekit.report.write": "report",
    "prunekit.search.study": "search (an Optuna study in SQLite or PostgreSQL)",
}

_WITHOUT_EXTRAS = textwrap.dedent("""
    import importlib, pkgutil, sys
    for name in {optional!r}:
        sys.modules[name] = None  # NOTE: as if not installed
    import prunekit
    failed = []
    for info in pkgutil.walk_packages(prunekit.__path__, "prunekit."):
        if info.name.endswith("__main__") or info.name in {allowed!r}:
            continue
        try:
            importlib.import_module(info.name)
        except ImportError as exc:
            failed.append(f"{{info.name}}: {{exc}}")
    print("IMPORT FAILURES:", failed)
    from prunekit.cli import main
    sys.exit(main(sys.argv[1:]))
""")

QUICK_PRUNE = ("prune", "--model", "simple_cnn", "--ratio", "0.5", "--baseline-epochs", "0", "--finetune-epochs",
               "0", "--max-eval-batches", "1", "--min-time-s", "0", "--batch-sizes", "1", "--no-progress")


def test_import_and_prune_without_any_optional_package(tmp_path: Path) -> None:
    script = _WITHOUT_EXTRAS.format(optional=OPTIONAL, allowed=(*NEEDS_REQUIRED, *EXTRA_ONLY))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script, *QUICK_PRUNE, "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "IMPORT FAILURES: []" in proc.stdout
    assert "channels removed 50.0 %" in proc.stdout
    assert "onnxruntime latency not measured" in proc.stdout and "pip install 'prunekit[onnx]'" in proc.stdout
    assert (tmp_path / "run" / "model" / "manifest.json").is_file()


def test_an_optional_feature_names_its_extra() -> None:
    """Without scipy, EVBMF ranks fail in one line naming the extra (not at import time)."""
    script = ("import sys; sys.modules['scipy'] = None\n"
              "from prunekit.decompose.vbmf import evbmf_threshold_tau\n"
              "try:\n    evbmf_threshold_tau(0.5)\nexcept ImportError as exc:\n    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "EVBMF rank selection needs the optional package 'scipy'" in proc.stdout
    assert "pip install 'prunekit[decompose]'" in proc.stdout


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv(tmp_path: Path) -> None:
    """A real `pip install .` (no extras) into a new venv; pip takes torch from this machine's wheels."""
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "site", "*.egg-info",
                                                                 "__pycache__", ".mypy_cache", ".ruff_cache"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(source)], check=True, timeout=3000)
    imported = subprocess.run([str(venv / "bin" / "python"), "-c", "import prunekit; print(prunekit.__version__)"],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    run = subprocess.run([str(venv / "bin" / "prunekit"), *QUICK_PRUNE, "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "run" / "model" / "manifest.json").is_file()
