"""In: a run folder (results.json, and the evidence.json its workflow saved). Out: ``report.html``, one
self-contained page of tables and figures, and ``report.md``, its summary with results.json's numbers.
"""

from prunekit.report.evidence import collect as collect_evidence
from prunekit.report.results import Run as Run
from prunekit.report.results import load_run as load_run
from prunekit.report.write import write_report as write_report

__all__ = ["Run", "collect_evidence", "load_run", "write_report"]
