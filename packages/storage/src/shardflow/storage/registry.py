"""Which backend serves which URL scheme: the built-in ones, entry points, and run-time registrations."""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable
from importlib.metadata import entry_points

from shardflow.storage.backend import Backend
from shardflow.storage.errors import UnsupportedURLError

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendFactory",
    "register_backend",
    "backend_factory",
    "url_scheme",
    "is_url",
    "known_schemes",
]

ENTRY_POINT_GROUP = "shardflow.storage.backends"
"""Entry-point group through which other distributions add schemes: ``name = scheme``,
``value = "module:factory"`` where ``factory(**options)`` returns a :class:`~shardflow.storage.Backend`."""

BackendFactory = Callable[..., Backend]

# Built-in schemes, imported only when first used so that no SDK loads at import time.
_BUILTIN = {
    "file": "shardflow.storage.backends.local:LocalBackend",
    "s3": "shardflow.storage.backends.s3:S3Backend",
    "gs": "shardflow.storage.backends.gcs:make_gcs_backend",
    "azure": "shardflow.storage.backends.azure:AzureBackend",
    "oci": "shardflow.storage.backends.oci:OCIBackend",
    "hf": "shardflow.storage.backends.hub:HubBackend",
    "dbfs": "shardflow.storage.backends.databricks:DatabricksBackend",
    "sftp": "shardflow.storage.backends.sftp:SFTPBackend",
}

# ``scheme://...``, and Databricks' own ``dbfs:/path`` form.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://|^(dbfs):/", re.IGNORECASE)
_lock = threading.Lock()
_registered: dict[str, BackendFactory] = {}


def url_scheme(url: str) -> str:
    """The scheme of ``url``: ``"file"`` for plain local paths (Windows drive letters included)."""
    match = _SCHEME.match(url)
    return (match.group(1) or match.group(2)).lower() if match else "file"


def is_url(text: str) -> bool:
    """Whether ``text`` names a store by URL (``s3://...``, ``file://...``, ``dbfs:/...``), not a plain
    local path (a one-letter "scheme" is a Windows drive)."""
    match = _SCHEME.match(text)
    return match is not None and len(match.group(1) or match.group(2)) > 1


def register_backend(scheme: str, factory: BackendFactory) -> None:
    """Serve ``scheme://`` URLs with backends made by ``factory(**options)``, in this process.

    Registrations take precedence over entry points and built-in schemes. Clients already handed out by
    :func:`~shardflow.storage.get_client` keep their backend.

    Args:
        scheme: URL scheme without ``://``, e.g. ``"myfs"``.
        factory: Callable taking the backend options as keywords and returning a Backend.
    """
    if not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        raise ValueError(f"scheme must be lowercase letters, digits, '+', '-' or '.', got {scheme!r}")
    with _lock:
        _registered[scheme] = factory


def known_schemes() -> list[str]:
    """Every scheme a backend is known for: built in, registered, or from entry points."""
    names = set(_BUILTIN) | set(_registered)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def backend_factory(scheme: str) -> BackendFactory:
    """The factory of backends for ``scheme``.

    Raises:
        UnsupportedURLError: When no backend serves the scheme; the message lists the known ones.
    """
    with _lock:
        factory = _registered.get(scheme)
    if factory is not None:
        return factory
    target = _BUILTIN.get(scheme)
    if target is None:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == scheme]
        if not found:
            raise UnsupportedURLError(
                f"no storage backend serves {scheme}:// URLs; known schemes: {', '.join(known_schemes())}. "
                f"Another package can add one through the {ENTRY_POINT_GROUP!r} entry-point group."
            )
        loaded: BackendFactory = found[0].load()
        return loaded
    module_name, _, attribute = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    return factory
