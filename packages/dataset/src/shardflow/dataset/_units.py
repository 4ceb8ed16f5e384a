"""Counts and byte sizes as numbers or strings such as ``"1.5m"`` and ``"10gb"``, in the reference's forms."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction

import numpy as np

from shardflow.dataset.errors import DatasetConfigError

__all__ = ["parse_count", "parse_bytes", "format_bytes"]

_NUMBER = r"^\s*(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s*"  # whole numbers may group digits: "1,234,567"
_COUNT = re.compile(_NUMBER + r"([kmbt]?)\s*$", re.IGNORECASE)
_COUNT_UNITS = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}
_BYTES = re.compile(_NUMBER + r"([kmgtpezy]?b?|bytes?)\s*$", re.IGNORECASE)
_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "byte": 1,
    "bytes": 1,
    **{f"{unit}b": 1024 ** (k + 1) for k, unit in enumerate("kmgtpezy")},
}


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
    number = Decimal(match.group(1).replace(",", ""))  # exact: no float rounding
    return int(number * units[match.group(2).lower()])


def parse_count(name: str, value: int | str | None) -> int | None:
    """A sample count: an int or a string such as ``"100k"``, ``"1.5m"`` or ``"2b"`` (powers of 1000).

    Raises:
        DatasetConfigError: Anything else, or a negative count.
    """
    return _parse(name, value, _COUNT, _COUNT_UNITS, "an int or a string such as '100k', '1.5m', '2b'")


def parse_bytes(name: str, value: int | str | None) -> int | None:
    """A byte size given as an int or a string such as ``"512mb"``, ``"1.5gb"`` (powers of 1024) or
    ``"1,234,567 bytes"`` (as errors print sizes).

    Raises:
        DatasetConfigError: Anything else, or a negative size.
    """
    return _parse(
        name, value, _BYTES, _BYTE_UNITS, "a number of bytes or a string such as '512mb', '1.5gb', '2tb'"
    )


def format_bytes(count: int, round_up: bool = False) -> str:
    """``count`` bytes for a person, in the units :func:`parse_bytes` reads (e.g. ``"1.5mb"``), to 4
    significant digits; with ``round_up``, never less than ``count`` (:func:`parse_bytes` reads it back as
    ``count`` or a little more), for limits a person passes back."""
    for unit in ("tb", "gb", "mb", "kb"):
        scale = _BYTE_UNITS[unit]
        if count >= scale:
            if not round_up:
                return f"{count / scale:.4g}{unit}"
            value = Fraction(count, scale)
            decimals = max(0, 4 - len(str(int(value))))
            step = Fraction(1, 10**decimals)
            text = f"{float(math.ceil(value / step) * step):.{decimals}f}"
            return (text.rstrip("0").rstrip(".") if decimals else text) + unit
    return f"{count}b"
