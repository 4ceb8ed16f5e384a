"""Functions run in child processes by the storage tests (importable by name, as spawn requires)."""

from __future__ import annotations

from typing import Any

__all__ = ["download_after_barrier"]


def download_after_barrier(url: str, options: dict[str, Any], dest: str, barrier: Any) -> None:
    """Build a client, wait for the sibling processes, then download ``url`` to ``dest``."""
    from shardflow.storage import get_client

    client = get_client(url, **options)
    barrier.wait(60)
    client.download(url, dest)
