"""In: a model and an example input (plus a labelled TensorDataset for accuracy and loss).
Out: a ``Profile`` (params, MACs, size, latency in PyTorch and ONNX Runtime), and ``compare`` tables.
"""

from prunekit.measure.accuracy import Metrics as Metrics
from prunekit.measure.accuracy import evaluate as evaluate
from prunekit.measure.classes import confusion_matrix as confusion_matrix
from prunekit.measure.classes import per_class_accuracy as per_class_accuracy
from prunekit.measure.fuse import Folded as Folded
from prunekit.measure.fuse import fold_batchnorm as fold_batchnorm
from prunekit.measure.latency import LatencyControl as LatencyControl
from prunekit.measure.latency import LatencyStats as LatencyStats
from prunekit.measure.latency import aa_controls as aa_controls
from prunekit.measure.latency import PairedLatency as PairedLatency
from prunekit.measure.latency import measure_latency as measure_latency
from prunekit.measure.latency import paired_latency as paired_latency
from prunekit.measure.layers import input_producers as input_producers
from prunekit.measure.layers import latency_by_call as latency_by_call
from prunekit.measure.layers import latency_by_module as latency_by_module
from prunekit.measure.macs import count_macs as count_macs
from prunekit.measure.macs import macs_by_module as macs_by_module
from prunekit.measure.onnx import export_onnx as export_onnx
from prunekit.measure.onnx_layers import layer_onnx as layer_onnx
from prunekit.measure.onnx_ops import OpTime as OpTime
from prunekit.measure.onnx_ops import op_times as op_times
from prunekit.measure.params import count_nonzero as count_nonzero
from prunekit.measure.params import count_params as count_params
from prunekit.measure.profile import Profile as Profile
from prunekit.measure.profile import compare as compare
from prunekit.measure.profile import compare_markdown as compare_markdown
from prunekit.measure.profile import profile as profile
from prunekit.measure.size import compressed_size as compressed_size
from prunekit.measure.size import size_on_disk as size_on_disk

__all__ = [
    # the record and the table
    "Profile", "profile", "compare", "compare_markdown",
    # the single measurements
    "count_params", "count_nonzero", "count_macs", "macs_by_module", "size_on_disk",
    "compressed_size", "LatencyStats", "measure_latency", "PairedLatency", "paired_latency",
    "LatencyControl", "aa_controls", "export_onnx", "layer_onnx", "OpTime", "op_times",
    "latency_by_module", "latency_by_call", "input_producers",
    "Folded", "fold_batchnorm",
    # accuracy
    "Metrics", "evaluate", "confusion_matrix", "per_class_accuracy",
]
