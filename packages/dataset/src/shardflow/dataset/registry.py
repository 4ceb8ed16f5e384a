"""The stream registry: the ``Stream`` classes ``StreamingDataset(stream_name=...)`` builds its stream from.

``streams_registry`` holds ``"stream"`` (:class:`~shardflow.dataset.Stream`) and whatever is registered
with ``streams_registry.register(name, func=cls)`` (or as a decorator, ``@streams_registry.register(name)``)
or advertised by an installed package under the entry-point group ``shardflow.streams``. A registered
class must be a ``Stream`` subclass (a ``@dataclass`` when it adds fields: the dataset copies its streams
with ``dataclasses.replace``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import overload

from shardflow.dataset.errors import DatasetConfigError
from shardflow.dataset.stream import Stream

__all__ = ["ENTRY_POINT_GROUP", "StreamRegistry", "streams_registry"]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "shardflow.streams"
"""Entry-point group whose entries (``name = "package.module:Class"``) the registry also offers."""

StreamClass = type[Stream]


class StreamRegistry:
    """Names of ``Stream`` classes; entry points of :data:`ENTRY_POINT_GROUP` are loaded on first use."""

    def __init__(self, group: str = ENTRY_POINT_GROUP) -> None:
        self.group = group
        self._classes: dict[str, StreamClass] = {}
        self._entry_points_loaded = False

    @overload
    def register(self, name: str, *, func: StreamClass) -> StreamClass: ...

    @overload
    def register(self, name: str) -> Callable[[StreamClass], StreamClass]: ...

    def register(
        self, name: str, *, func: StreamClass | None = None
    ) -> StreamClass | Callable[[StreamClass], StreamClass]:
        """Register ``func`` (a ``Stream`` subclass) under ``name``; without ``func``, a decorator that does.

        Raises:
            DatasetConfigError: ``func`` is not a ``Stream`` subclass.
        """
        if func is None:
            return lambda cls: self.register(name, func=cls)
        if not (isinstance(func, type) and issubclass(func, Stream)):
            raise DatasetConfigError(
                f"streams_registry.register({name!r}, func={func!r}): only Stream subclasses can be "
                "registered"
            )
        self._classes[name] = func
        return func

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for point in entry_points(group=self.group):
            if point.name not in self._classes:
                try:
                    self.register(point.name, func=point.load())
                except Exception as exc:  # a broken plugin must not hide the other names
                    logger.warning("entry point %s of group %s cannot be used: %s", point, self.group, exc)

    def get(self, name: str) -> StreamClass:
        """The class registered as ``name``.

        Raises:
            DatasetConfigError: Nothing is registered under ``name`` (the message lists what is).
        """
        if name not in self._classes:
            self._load_entry_points()
        try:
            return self._classes[name]
        except KeyError:
            raise DatasetConfigError(
                f"stream_name={name!r} is not registered: use one of {sorted(self._classes)}, or register "
                f"the class first with streams_registry.register({name!r}, func=YourStream)"
            ) from None

    def get_all(self) -> dict[str, StreamClass]:
        """Every registered name and its class."""
        self._load_entry_points()
        return dict(self._classes)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.get_all()


streams_registry = StreamRegistry()
streams_registry.register("stream", func=Stream)
