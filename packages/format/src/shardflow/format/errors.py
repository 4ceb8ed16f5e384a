"""The errors of shardflow.format: one base, leaves that also inherit the matching builtin.

Where mosaicml-streaming raises a builtin (``json.JSONDecodeError`` for a corrupt ``index.json``,
``FileNotFoundError`` for a missing shard, ``AttributeError`` for a value of the wrong type, ``ValueError``
for an unknown writer argument, ``TypeError`` for an unknown column encoding, ``KeyError`` for a sample
without a column), the error raised here is also an instance of it, so code written for
either library catches it.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "FormatError",
    "EncodingError",
    "EncodingTypeError",
    "SampleKeysError",
    "UnknownNameError",
    "UnknownEncodingError",
    "UnknownFormatError",
    "UnknownArgumentError",
    "IndexFormatError",
    "IndexDecodeError",
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


class UnknownEncodingError(UnknownNameError, TypeError):
    """A writer column whose encoding does not exist: also the ``TypeError`` mosaicml-streaming raises."""


class UnknownFormatError(UnknownNameError):
    """A shard format name that no format serves; the message lists the known ones."""


class UnknownArgumentError(FormatError, TypeError):
    """A writer argument that does not exist: a ``TypeError``, as Python's own, and a ``ValueError``, as
    mosaicml-streaming raises; the message lists the valid ones."""


class EncodingError(FormatError):
    """A value does not fit its column; the message names the column, the sample and what was expected."""


class EncodingTypeError(EncodingError, AttributeError, TypeError):
    """A value of the wrong type for its encoding (a ``str`` for an ``int`` column, a list for an
    ``ndarray``): also an ``AttributeError`` and a ``TypeError``, which mosaicml-streaming raises there."""


class SampleKeysError(EncodingError, KeyError):
    """A sample without one of the writer's columns (or with keys it does not have): also the ``KeyError``
    mosaicml-streaming raises for a missing column. ``str()`` is the message, unquoted."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class IndexFormatError(FormatError):
    """An ``index.json`` that is corrupt, truncated, of an unsupported version or unsafe."""


class IndexDecodeError(IndexFormatError, json.JSONDecodeError):
    """An ``index.json`` that is not valid JSON: also the ``json.JSONDecodeError`` that mosaicml-streaming
    raises there.

    ``str()`` is shardflow's message (naming the file and what to do); ``msg``, ``doc``, ``pos``, ``lineno``
    and ``colno`` are the parser's, as on any ``JSONDecodeError``.

    Args:
        message: The error message.
        doc: The text that failed to parse.
        pos: Where in ``doc`` parsing failed.
        msg: The parser's own message; defaults to ``message``.
    """

    def __init__(self, message: str, doc: str = "", pos: int = 0, msg: str | None = None) -> None:
        json.JSONDecodeError.__init__(self, message if msg is None else msg, doc, pos)
        self.args = (message,)

    def __reduce__(self) -> tuple[Any, ...]:
        # JSONDecodeError's own would rebuild the exception from the parser's message alone.
        return type(self), (self.args[0], self.doc, self.pos, self.msg)


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
