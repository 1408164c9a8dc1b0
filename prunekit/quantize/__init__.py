"""In: a trained (perhaps pruned) model, or its fp32 ONNX file, and calibration batches.
Out: an int8 ONNX file (ONNX Runtime static QDQ or dynamic quantisation, with the layers that
lose too much kept in fp32), an int8 PyTorch module (torchao: dynamic int8 linear layers, or static
PT2E compiled), a quantisation-aware fine-tuned model, and an edge bundle.

Vocabulary: ``method`` is the calibration algorithm (minmax, entropy, percentile); ``exclude``
names ONNX nodes kept in fp32; a metric ``drop`` is fp32 metric minus int8 metric for metrics where
higher is better (accuracy, cosine) and the reverse otherwise.
"""

from prunekit.quantize.bundle import write_bundle as write_bundle
from prunekit.quantize.fallback import Fallback as Fallback
from prunekit.quantize.fallback import quantize_within as quantize_within
from prunekit.quantize.ptq import METHODS as METHODS
from prunekit.quantize.ptq import quantisable_nodes as quantisable_nodes
from prunekit.quantize.ptq import quantize_onnx as quantize_onnx
from prunekit.quantize.qat import DelayedQuantisation as DelayedQuantisation
from prunekit.quantize.qat import QATResult as QATResult
from prunekit.quantize.qat import qat as qat
from prunekit.quantize.runtime import OnnxModel as OnnxModel
from prunekit.quantize.runtime import evaluate_onnx as evaluate_onnx
from prunekit.quantize.torch_int8 import TorchInt8 as TorchInt8
from prunekit.quantize.torch_int8 import quantize_torch as quantize_torch
from prunekit.quantize.torch_int8 import restore as restore

__all__ = [
    # post-training int8
    "METHODS", "quantize_onnx", "quantisable_nodes", "Fallback", "quantize_within",
    # int8 in PyTorch (torchao)
    "TorchInt8", "quantize_torch", "restore",
    # quantisation-aware fine-tuning
    "DelayedQuantisation", "QATResult", "qat",
    # running and shipping the ONNX file
    "OnnxModel", "evaluate_onnx", "write_bundle",
]
