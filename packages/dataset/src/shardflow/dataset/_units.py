"""Counts and byte sizes as numbers or strings such as ``"1.5m"`` and ``"10gb"``, in the reference's forms."""

from __future__ import annotations

import re

import numpy as np

from shardflow.dataset.errors import DatasetConfigError

__all__ = ["parse_count", "parse_bytes", "format_bytes"]

_NUMBER = r"^\s*(\d+(?:\.\d+)?)\s*"
_COUNT = re.compile(_NUMBER + r"([kmbt]?)\s*$", re.IGNORECASE)
_COUNT_UNITS = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}
_BYTES = re.compile(_NUMBER + r"([kmgtpezy]?b?)\s*$", re.IGNORECASE)
_BYTE_UNITS = {"": 1, "b": 1, **{f"{unit}b": 1024 ** (k + 1) for k, unit in enumerate("kmgtpezy")}}


def _parse(
    name: str, value: object, pattern: re.Pattern[str], units: dict[str, int], forms: str
) -> int | None:
    """``value`` as a whole number: an int as is, or a number with one of ``units``' suffixes."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < 0:
            raise DatasetConfigError(f"{name}={value} must be 0 or more")
        return int(value)
    match = pattern.match(value) if isinstance(value, str) else None
    if match is None or match.group(2).lower() not in units:
        raise DatasetConfigError(f"{name}={value!r} must be {forms}")
    return int(float(match.group(1)) * units[match.group(2).lower()])


def parse_count(name: str, value: int | str | None) -> int | None:
    """A sample count: an int or a string such as ``"100k"``, ``"1.5m"`` or ``"2b"`` (powers of 1000).

    Raises:
        DatasetConfigError: Anything else, or a negative count.
    """
    return _parse(name, value, _COUNT, _COUNT_UNITS, "an int or a string such as '100k', '1.5m', '2b'")


def parse_bytes(name: str, value: int | str | None) -> int | None:
    """A byte size given as an int or a string such as ``"512mb"`` or ``"1.5gb"`` (powers of 1024).

    Raises:
        DatasetConfigError: Anything else, or a negative size.
    """
    return _parse(
        name, value, _BYTES, _BYTE_UNITS, "a number of bytes or a string such as '512mb', '1.5gb', '2tb'"
    )


def format_bytes(count: int) -> str:
    """``count`` bytes for a person, in the units :func:`parse_bytes` reads (e.g. ``"1.5mb"``)."""
    for unit in ("tb", "gb", "mb", "kb"):
        scale = _BYTE_UNITS[unit]
        if count >= scale:
            return f"{count / scale:.4g}{unit}"
    return f"{count}b"
