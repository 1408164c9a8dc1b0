"""Differentiable pruning: learnable Hard Concrete gates on ChannelGroups, trained with the loss
towards a MACs budget, then hardened into a Plan that the structural engine applies."""

from prunekit.gates.channel_gates import ChannelGates, Hardened
from prunekit.gates.hard_concrete import HardConcrete

__all__ = ["ChannelGates", "HardConcrete", "Hardened"]
