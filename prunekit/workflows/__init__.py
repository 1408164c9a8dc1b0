"""The application layer: each command of the CLI and each recipe stage is one call here.

In: a model spec, a dataset and a stage's options. Out: a JSON-ready results dict (and, with an
``out_dir``, ``results.json`` and the saved model). One module per workflow: ``train``,
``evaluate``, ``profile``, ``prune``, ``sparsify``, ``decompose``, ``partition``, ``quantize``,
``export``; ``common`` holds what they share. ``prunekit.cli`` and ``prunekit.recipes`` sit on top;
no feature package imports this one (``.importlinter`` and ``tests/test_layering.py`` check it).

Import the functions from their modules (``from prunekit.workflows.prune import prune``): a
function named like its module would hide the module if it were re-exported here.
"""

from prunekit.workflows.common import Measure as Measure

__all__ = ["Measure"]
