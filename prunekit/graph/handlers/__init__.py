"""Built-in handlers; importing this package registers them (see ``prunekit.graph.registry``)."""

from prunekit.graph.handlers import conv, einsum, elementwise, fourier, linear, norm, reduce, shape  # noqa: F401
from prunekit.graph.handlers import attention  # noqa: F401  (after shape: wraps its getitem)
from prunekit.graph.handlers import bias_heads, recurrent, scatter, space_to_depth, user_modules  # noqa: F401
from prunekit.graph.handlers import parametrized, scripted, spectral_norm, torchvision_modules, weight_norm  # noqa: F401
