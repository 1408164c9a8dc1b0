"""Model + example inputs in, DependencyGraph out: every set of channels that must be cut together.

Terms used throughout: a *group* (:class:`ChannelGroup`) is one coupled dimension of ``size``
channels; a *member* is one tensor axis slice in it; a *handler* is the pair (rule, refresh) that
says how a torch function moves channels and how a module's width attributes follow.
"""

from prunekit.graph.dependency import DependencyGraph as DependencyGraph
from prunekit.graph.groups import ChannelGroup as ChannelGroup
from prunekit.graph.groups import Member as Member
from prunekit.graph.registry import register_refresh as register_refresh
from prunekit.graph.registry import register_rule as register_rule
from prunekit.graph import handlers as _handlers  # noqa: F401,E402  (registers the built-in handlers)

__all__ = ["DependencyGraph", "ChannelGroup", "Member", "register_rule", "register_refresh"]
