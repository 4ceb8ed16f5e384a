"""The column types of the JSON, CSV and TSV formats: ``str``, ``int`` and ``float``."""

from __future__ import annotations

from shardflow.format.errors import UnknownNameError

__all__ = ["TEXT_ENCODINGS", "get_text_type"]

TEXT_ENCODINGS: dict[str, type] = {"float": float, "int": int, "str": str}


def get_text_type(encoding: str, column: str) -> type:
    """The Python type that values of a JSON/CSV/TSV column must have.

    Args:
        encoding: The column's encoding name.
        column: The column's name, for the error message.

    Raises:
        UnknownNameError: ``encoding`` is not one of the text encodings; the message lists them.
    """
    try:
        return TEXT_ENCODINGS[encoding]
    except (KeyError, TypeError):
        raise UnknownNameError(
            f"column {column!r}: unknown encoding {encoding!r} for a JSON/CSV/TSV dataset; "
            f"valid encodings: {sorted(TEXT_ENCODINGS)}"
        ) from None
