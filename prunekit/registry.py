"""One kind of registry for everything that is chosen by name (models, datasets, importance, ...).

A registry is plain data: ``register`` adds a factory under a lower_snake name, ``create(name,
**kwargs)`` calls it, ``names(pattern)`` lists them. Each name is also its YAML key and CLI choice.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from prunekit.errors import ConfigError, UnknownNameError, did_you_mean

__all__ = ["Registry", "Entry"]

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered factory with free-form metadata (e.g. ``{"source": "torchvision"}``)."""

    name: str
    factory: Callable[..., T]
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Name -> factory table.

    Args:
        kind: what the entries are, used in messages ("model", "dataset", ...).
        list_hint: how a user lists the entries, e.g. "`prunekit models` lists them all".
    """

    def __init__(self, kind: str, *, list_hint: str = "") -> None:
        self.kind = kind
        self.list_hint = list_hint
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str | None = None, **meta: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register ``factory`` under ``name`` (default: the function's name)."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            self.add(name or factory.__name__, factory, **meta)
            return factory

        return decorator

    def add(self, name: str, factory: Callable[..., T], **meta: Any) -> None:
        """Register ``factory`` under ``name``; a name can be registered only once."""
        if name in self._entries:
            raise ConfigError(
                f"{self.kind} '{name}' is already registered (by {self._entries[name].factory!r}). "
                f"Pick another name, or remove the old entry first."
            )
        self._entries[name] = Entry(name, factory, dict(meta))

    def remove(self, name: str) -> None:
        """Remove an entry (mainly for tests and for replacing a user's own registration)."""
        self.get(name)
        del self._entries[name]

    def get(self, name: str) -> Entry[T]:
        """The entry called ``name``; unknown names raise with a suggestion and the list hint."""
        # NOTE: CLI users type "fashion-mnist"; the registered (YAML) key is "fashion_mnist".
        key = name if name in self._entries else name.replace("-", "_")
        try:
            return self._entries[key]
        except KeyError:
            hint = f" {self.list_hint}." if self.list_hint else f" Known: {', '.join(self.names()[:20])}."
            raise UnknownNameError(
                f"Unknown {self.kind} '{name}'.{did_you_mean(name, self._entries)}{hint}"
            ) from None

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the entry called ``name`` with ``kwargs``."""
        return self.get(name).factory(**kwargs)

    def names(self, pattern: str = "*", **meta: Any) -> list[str]:
        """Sorted names matching a shell-style ``pattern`` and every ``meta`` key given."""
        return sorted(
            n for n, e in self._entries.items()
            if fnmatch.fnmatchcase(n, pattern) and all(e.meta.get(k) == v for k, v in meta.items())
        )

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name.replace("-", "_") in self._entries)

    def __len__(self) -> int:
        return len(self._entries)
