"""One saved format, no pickle: a folder of ``model.safetensors`` + a versioned ``manifest.json``.

In: any result (pruned widths, removed blocks, factorised layers, sparse storage, partition
stages, Hugging Face models, combinations). Out: :func:`save` writes the folder atomically;
:func:`load` rebuilds a module with the same outputs. ``files`` holds the plain helpers
(safetensors weights, JSON, atomic writes) the rest of prunekit uses.
"""

from prunekit.io.files import atomic_path as atomic_path
from prunekit.io.files import load_json as load_json
from prunekit.io.files import load_weights as load_weights
from prunekit.io.files import save_json as save_json
from prunekit.io.files import save_weights as save_weights
from prunekit.io.layout import layout_record as layout_record
from prunekit.io.layout import restore_layout as restore_layout
from prunekit.io.load import load as load
from prunekit.io.manifest import BUFFERS_FILE as BUFFERS_FILE
from prunekit.io.manifest import FORMAT as FORMAT
from prunekit.io.manifest import MANIFEST_FILE as MANIFEST_FILE
from prunekit.io.manifest import VERSION as VERSION
from prunekit.io.manifest import WEIGHTS_FILE as WEIGHTS_FILE
from prunekit.io.manifest import Manifest as Manifest
from prunekit.io.manifest import MODEL_DIR as MODEL_DIR
from prunekit.io.manifest import model_folder as model_folder
from prunekit.io.manifest import read_manifest as read_manifest
from prunekit.io.save import record_metrics as record_metrics
from prunekit.io.save import save as save
from prunekit.io.stages import Stages as Stages

__all__ = [
    # the format
    "save", "load", "Manifest", "read_manifest", "model_folder", "record_metrics", "Stages",
    "FORMAT", "VERSION", "MANIFEST_FILE", "WEIGHTS_FILE", "BUFFERS_FILE", "MODEL_DIR",
    # the layout record
    "layout_record", "restore_layout",
    # plain files
    "atomic_path", "save_weights", "load_weights", "save_json", "load_json",
]
