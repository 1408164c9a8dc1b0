"""`prunekit prune` says how the widths were chosen for ONNX Runtime (achieved['rounding'])."""

from __future__ import annotations

from prunekit.cli.prune import _achieved_line

BASE = {"target": {"macs": 0.5}, "achieved": {"macs": 0.493, "params": 0.226, "channels_removed": 0.6}}


def test_the_rounding_decision_is_printed_under_the_achieved_line() -> None:
    rounding = {"backend": "onnxruntime", "batch_size": 1, "threads": 2, "gains": {"auto": 0.3, "16": 0.54},
                "noise": 0.004, "chosen": "16"}
    text = _achieved_line({**BASE, "achieved": {**BASE["achieved"], "rounding": rounding}})
    first, second = text.split("\n")
    assert first == ("target: macs kept 0.5 -> achieved: MACs kept 49.3 %, params kept 22.6 %, "
                     "channels removed 60.0 %")
    assert second == ("widths for onnxruntime: multiples of 16; the whole pruned model timed against exact widths: "
                      "multiples of 8 or 16 (the auto rule) +30 %, multiples of 16 +54 % time saved (A/A noise 0 %)")


def test_exact_widths_say_why_and_no_rounding_prints_one_line() -> None:
    note = {"backend": "onnxruntime", "chosen": "exact", "note": "no rounded plan lands within the target's band"}
    text = _achieved_line({**BASE, "achieved": {**BASE["achieved"], "rounding": note}})
    assert text.endswith("\nwidths for onnxruntime: exact widths (no rounded plan lands within the target's band)")
    assert "\n" not in _achieved_line(BASE)
