"""How the storage tests reach each store: its root URL and the client options for an endpoint."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shardflow.storage import StorageClient, get_client

__all__ = ["Target"]


@dataclass
class Target:
    """One store under test.

    Attributes:
        name: Short name for test ids.
        root: URL of the test bucket (or folder).
        port: The server's port on 127.0.0.1 (``None`` for local files), for a proxy to forward to.
        make_options: Client options for an endpoint (the server's own when given ``None``).
        paginates: Whether the server honours page sizes in listings (gcp-storage-emulator answers every
            listing in one page, whatever the client asks).
    """

    name: str
    root: str
    port: int | None
    make_options: Callable[[str | None], dict[str, Any]]
    paginates: bool = True

    def options(self, endpoint: str | None = None, **extra: Any) -> dict[str, Any]:
        return {**self.make_options(endpoint), **extra}

    def client(self, endpoint: str | None = None, **extra: Any) -> StorageClient:
        """A client of this store, through ``endpoint`` if given."""
        return get_client(self.root, **self.options(endpoint, **extra))

    def fresh_prefix(self) -> str:
        """A folder-like URL no other test uses."""
        return f"{self.root.rstrip('/')}/{uuid.uuid4().hex[:12]}"
