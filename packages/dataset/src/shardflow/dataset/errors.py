"""The errors of shardflow.dataset: one base, leaves that also inherit the matching builtin."""

from __future__ import annotations

__all__ = ["DatasetError", "DatasetConfigError", "EpochLedgerError", "ShardWaitTimeout", "StateDictError"]


class DatasetError(Exception):
    """Base of every error raised by shardflow.dataset itself (format, storage and shuffle raise theirs)."""


class DatasetConfigError(DatasetError, ValueError):
    """An argument that cannot work; the message names it, its value and a fix."""


class StateDictError(DatasetError, ValueError):
    """A state dict that cannot be resumed from; the message names the key and its value."""


class ShardWaitTimeout(DatasetError, TimeoutError):
    """A sample's shard did not arrive in time; the message names the shard, its URL and the timeout."""


class EpochLedgerError(DatasetError):
    """DataLoader workers cannot count epochs (their ledger folder is not writable): the message names the
    folder and what to do."""
