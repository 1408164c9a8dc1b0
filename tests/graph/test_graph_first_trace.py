"""The first trace in a process gives the same graph as every later one. Refreshes for library
classes (torchvision's VisionTransformer keeps ``hidden_dim`` in step with its class token) used to
register on first use, part-way through the first trace: that trace froze ViT's hidden width (its
``reshape(n, self.hidden_dim, ...)`` read as a constant held by two attributes) and later ones cut it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, torch
from torchvision.models import VisionTransformer
from prunekit.graph import DependencyGraph

def groups():
    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=4, hidden_dim=32, mlp_dim=64,
                            num_classes=10).eval()
    graph = DependencyGraph.trace(vit, torch.randn(1, 3, 32, 32))
    return sorted([g.id, g.prunable, list(g.reasons)] for g in graph.groups)

print(json.dumps([groups(), groups()]))
"""


def test_the_first_trace_in_a_process_sees_every_refresh() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = json.loads(done.stdout.strip().splitlines()[-1])
    assert first == second
    hidden = next(g for g in first if g[0] == "conv_proj.weight:0")
    assert hidden[1] is True, hidden  # NOTE: the hidden width is cut (its refresh rewrites hidden_dim)
