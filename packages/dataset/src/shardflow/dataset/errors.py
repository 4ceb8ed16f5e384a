"""The errors of shardflow.dataset: one base, leaves that also inherit the matching builtin."""

from __future__ import annotations

__all__ = [
    "DatasetError",
    "DatasetConfigError",
    "IndexNotFoundError",
    "NoShardsError",
    "EpochLedgerError",
    "ShardWaitTimeout",
    "StateDictError",
]


class DatasetError(Exception):
    """Base of every error raised by shardflow.dataset itself (format, storage and shuffle raise theirs)."""


class DatasetConfigError(DatasetError, ValueError):
    """An argument that cannot work; the message names it, its value and a fix."""


class IndexNotFoundError(DatasetConfigError, FileNotFoundError):
    """A stream's remote has no ``index.json`` (also a ``FileNotFoundError``, as mosaicml-streaming raises);
    the message names the file, ``remote`` and ``split``."""


class NoShardsError(DatasetConfigError, RuntimeError):
    """A stream offers nothing to read: its index lists no shards (or no samples), or a local-only stream
    has no index (also a ``RuntimeError``, as mosaicml-streaming raises there)."""


class StateDictError(DatasetError, ValueError):
    """A state dict that cannot be resumed from; the message names the key and its value."""


class ShardWaitTimeout(DatasetError, TimeoutError):
    """A sample's shard did not arrive in time; the message names the shard, its URL and the timeout."""


class EpochLedgerError(DatasetError):
    """DataLoader workers cannot count epochs (their ledger folder is not writable): the message names the
    folder and what to do."""
