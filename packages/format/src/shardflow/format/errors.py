"""The errors of shardflow.format: one base, leaves that also inherit the matching builtin."""

from __future__ import annotations

__all__ = [
    "FormatError",
    "EncodingError",
    "UnknownNameError",
    "IndexFormatError",
    "ShardFormatError",
    "ShardMissingError",
    "ShardHashError",
    "ShardTooLargeError",
    "UnsafeEncodingError",
    "MissingDependencyError",
    "UnsupportedColumnError",
]


class FormatError(ValueError):
    """Base of every error raised by shardflow.format."""


class UnknownNameError(FormatError):
    """An encoding, compression or hash name that does not exist; the message lists the valid ones."""


class EncodingError(FormatError):
    """A value does not fit its column; the message names the column, the sample and what was expected."""


class IndexFormatError(FormatError):
    """An ``index.json`` that is corrupt, truncated, of an unsupported version or unsafe."""


class ShardFormatError(FormatError):
    """A shard file that is corrupt or truncated."""


class ShardMissingError(ShardFormatError, FileNotFoundError):
    """A shard file of which neither the raw nor the compressed form exists; the message names the paths."""


class ShardHashError(FormatError):
    """A shard whose bytes do not match the hash recorded in the index."""


class ShardTooLargeError(FormatError):
    """A shard that would reach 4 GiB, which uint32 offsets cannot address."""


class UnsafeEncodingError(FormatError):
    """A ``pkl`` column read without ``allow_unsafe_types=True``."""


class MissingDependencyError(FormatError, ImportError):
    """An optional codec or hash whose library is not installed; the message names the extra."""


class UnsupportedColumnError(FormatError):
    """A column that ``get_columns`` cannot read as an array; the message names it and its encoding."""
