"""Built-in handlers; importing this package registers them (see ``prunekit.graph.registry``)."""

from prunekit.graph.handlers import conv, elementwise, linear, norm, reduce, shape  # noqa: F401
