"""Named parts of a placement profile (filters, scorers, pickers): built in, or loaded from other packages.

A profile names its parts in YAML (`scorers: [{name: prefix_cache, weight: 2}]`), so each
kind of part is a registry from name to implementation. Built-in parts register where they
are defined (`@SCORERS.register("prefix_cache")`); a part from another package registers
through a Python entry point in the kind's group, declared in that package's pyproject.toml:

    [project.entry-points."tessera.placement.scorers"]
    gpu_temperature = "my_package.scorers:gpu_temperature"

Entry points are read once, the first time a name is not found among the built-in parts, so
a scheduler that uses only built-in parts never scans installed packages. A built-in name
cannot be replaced from outside (a typo in a third-party package must not silently change
placement).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

log = logging.getLogger("tessera.placement")

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> implementation for one kind of profile part, with entry points as the extension point."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind  # "filter", "scorer", "picker": for messages
        self.group = group  # the entry-point group other packages register under
        self._parts: dict[str, T] = {}
        self._entry_points_read = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make `part` available to profiles under `name`."""

        def add(part: T) -> T:
            if name in self._parts:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._parts[name] = part
            return part

        return add

    def get(self, name: str) -> T | None:
        """The part called `name`, looking through other packages' entry points once if need be."""
        if name not in self._parts and not self._entry_points_read:
            self._read_entry_points()
        return self._parts.get(name)

    def names(self) -> list[str]:
        """Every name known now (built-in ones, and those from entry points once read)."""
        return list(self._parts)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _read_entry_points(self) -> None:
        self._entry_points_read = True
        for ep in entry_points(group=self.group):
            if ep.name in self._parts:
                log.warning(
                    "%s %r from %s ignored: a built-in %s has that name", self.kind, ep.name, ep.value, self.kind
                )
                continue
            try:
                self._parts[ep.name] = ep.load()
            except Exception as exc:  # noqa: BLE001 - one broken plugin must not stop the scheduler
                log.warning("%s %r from %s could not be loaded: %s", self.kind, ep.name, ep.value, exc)
