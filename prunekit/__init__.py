"""prunekit: make PyTorch models smaller and faster, and prove it with measurements.

The public API, grouped in the order data flows (see DESIGN.md). Sub-packages hold the rest:
``prunekit.data``, ``prunekit.models``, ``prunekit.graph``, ``prunekit.importance``,
``prunekit.structured``, ``prunekit.sparsity``, ``prunekit.decompose``, ``prunekit.gates``,
``prunekit.recipes``, ``prunekit.recover``, ``prunekit.measure``, ``prunekit.hf``.
"""

__version__ = "0.1.0"

# data and models
from prunekit.data import DataSplits as DataSplits
from prunekit.data import load as load_data
from prunekit.models import create as create_model

# graph: which channels must be cut together
from prunekit.graph import ChannelGroup as ChannelGroup
from prunekit.graph import DependencyGraph as DependencyGraph
from prunekit.graph import register_refresh as register_refresh
from prunekit.graph import register_rule as register_rule

# structured pruning: scores -> plan -> smaller model
from prunekit.structured import Plan as Plan
from prunekit.structured import StructuredPruner as StructuredPruner
from prunekit.structured import Target as Target
from prunekit.structured import allocate as allocate
from prunekit.structured import apply as apply
from prunekit.structured import prune_depth as prune_depth

# sparsity, decomposition, recipes
from prunekit.sparsity import Sparsifier as Sparsifier
from prunekit.sparsity import one_shot as one_shot
from prunekit.decompose import decompose as decompose
from prunekit.recipes import run_recipe as run_recipe

# recovery: training and fine-tuning
from prunekit.recover import TrainConfig as TrainConfig
from prunekit.recover import train as train

# measurement
from prunekit.measure import Profile as Profile
from prunekit.measure import compare as compare
from prunekit.measure import evaluate as evaluate
from prunekit.measure import profile as profile

# io: no pickle
from prunekit.io import load as load
from prunekit.io import save as save

# errors
from prunekit.errors import PrunekitError as PrunekitError

__all__ = [
    "DataSplits", "load_data", "create_model",
    "ChannelGroup", "DependencyGraph", "register_refresh", "register_rule",
    "Plan", "StructuredPruner", "Target", "allocate", "apply", "prune_depth",
    "Sparsifier", "one_shot", "decompose", "run_recipe",
    "TrainConfig", "train",
    "Profile", "compare", "evaluate", "profile",
    "load", "save",
    "PrunekitError",
]
