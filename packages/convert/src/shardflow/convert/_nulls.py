"""Finding nulls in Arrow columns at any depth: MDS has no null, and no encoding but ``json``/``pkl`` can
hold one. Converting a null with numpy would turn it into a value (``-9223372036854775808`` in an int64
list, NaN in a float one), so the converters look for them first."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["NULLABLE", "first_null", "null_message"]

NULLABLE = frozenset({"json", "pkl"})
"""The MDS encodings that store a null (as ``None``)."""


def first_null(array: Any) -> tuple[int, str] | None:
    """The first row of the Arrow ``array`` that holds a null anywhere (the value itself, a list's element,
    a struct's field, a map's key or value, at any depth) and where in the row: ``''`` for the value,
    else e.g. ``"element 2"`` or ``"field 'b' element 0"``; None when there is no null."""
    import pyarrow as pa

    if array.null_count:
        return int(np.argmax(array.is_null().to_numpy(zero_copy_only=False))), ""
    kind = array.type
    if pa.types.is_dictionary(kind):
        return first_null(array.dictionary_decode())
    if pa.types.is_struct(kind):
        hits = [
            (hit[0], _inside(f"field {field.name!r}", hit[1]))
            for field, child in zip(kind, array.flatten(), strict=True)
            if (hit := first_null(child)) is not None
        ]
        return min(hits) if hits else None
    if pa.types.is_fixed_size_list(kind):
        size = kind.list_size
        inner = first_null(array.values.slice(array.offset * size, len(array) * size))
        if inner is None:
            return None
        return inner[0] // size, _inside(f"element {inner[0] % size}", inner[1])
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_map(kind):
        offsets = array.offsets.to_numpy()  # absolute positions in array.values, which ignores slicing
        inner = first_null(array.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0])))
        if inner is None:
            return None
        starts = offsets - offsets[0]
        row = int(np.searchsorted(starts, inner[0], side="right")) - 1
        return row, _inside(f"element {inner[0] - int(starts[row])}", inner[1])
    return None


def _inside(outer: str, inner: str) -> str:
    return f"{outer} {inner}" if inner else outer


def null_message(column: str, inside: str) -> str:
    """``"column 'x' is null"`` or ``"column 'x' has a null (element 2)"``, for errors."""
    return f"column {column!r} has a null ({inside})" if inside else f"column {column!r} is null"
