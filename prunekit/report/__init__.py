"""In: a run folder (results.json, and the evidence.json its workflow saved). Out: ``report.html``, one
self-contained page of tables and figures, and ``report.md``, its summary with results.json's numbers.

Collecting evidence needs only torch (Captum for attributions, where installed); drawing the report
needs matplotlib (``pip install 'prunekit[report]'``), imported only when ``write_report`` is used.
"""

from typing import Any

from prunekit.report.evidence import collect as collect_evidence
from prunekit.report.results import Run as Run
from prunekit.report.results import load_run as load_run

__all__ = ["Run", "collect_evidence", "load_run", "write_report"]


def __getattr__(name: str) -> Any:
    if name == "write_report":  # NOTE: lazy: matplotlib is an extra, and a run without it still saves
        from prunekit.errors import require

        require("matplotlib", extra="report", feature="The HTML report")
        from prunekit.report.write import write_report

        return write_report
    raise AttributeError(f"module 'prunekit.report' has no attribute {name!r}")
