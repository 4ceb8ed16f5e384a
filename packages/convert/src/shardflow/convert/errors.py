"""The errors of shardflow.convert: one base, leaves that also inherit the matching builtin."""

from __future__ import annotations

__all__ = [
    "ConvertError",
    "InputError",
    "OutputExistsError",
    "MissingDependencyError",
]


class ConvertError(Exception):
    """Base of every error raised by shardflow.convert."""


class InputError(ConvertError, ValueError):
    """Input that cannot be converted: a missing folder, a malformed line, an unsupported column type.

    The message names the file and the line, row or column at fault.
    """


class OutputExistsError(ConvertError, FileExistsError):
    """``out`` already holds files and the conversion was not asked to resume."""


class MissingDependencyError(ConvertError, ImportError):
    """An optional reader (Pillow, pyarrow, ...) that is not installed; the message names the extra."""
