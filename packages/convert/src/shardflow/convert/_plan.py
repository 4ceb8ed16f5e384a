"""The split of an input into partitions: contiguous ranges of an ordered list of units.

A converter lists its input as *units* in a fixed order (image files, byte ranges of text files, rows of
Parquet files, ...). :func:`split` cuts that list into partitions whose concatenation, in order, is the
whole input: converting the partitions one after the other, or in parallel and merging their indexes in
order, gives the same samples in the same order.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shardflow.convert.errors import InputError

__all__ = ["Unit", "Segment", "split", "units_digest", "find_files"]


@dataclass(frozen=True)
class Unit:
    """One piece of input.

    Attributes:
        name: What it is read from (a path), for reading and for messages.
        size: Its weight in the split: samples, rows or bytes.
        splittable: Whether a partition may take a part of it (``[start, stop)`` of ``size``).
        info: Whatever else the converter needs to read it (a class index, ...); JSON-compatible.
    """

    name: str
    size: int
    splittable: bool = False
    info: Any = field(default=None, compare=True)


@dataclass(frozen=True)
class Segment:
    """The part ``[start, stop)`` of a unit that one partition reads."""

    unit: Unit
    start: int
    stop: int


def split(units: Sequence[Unit], partitions: int) -> list[list[Segment]]:
    """Cut ``units`` into at most ``partitions`` contiguous, non-empty partitions of near-equal weight.

    A splittable unit is cut where a partition boundary falls inside it; an unsplittable one goes whole to
    the partition in which it starts. Partitions left empty are dropped.
    """
    total = sum(unit.size for unit in units)
    count = max(1, min(partitions, total))
    bounds = [total * k // count for k in range(1, count)] + [total]
    parts: list[list[Segment]] = [[] for _ in range(count)]
    offset = 0
    current = 0  # the partition that offset falls in
    for unit in units:
        while offset >= bounds[current] and current < count - 1:
            current += 1
        if not unit.splittable or unit.size == 0:
            parts[current].append(Segment(unit, 0, unit.size))
            offset += unit.size
            continue
        start = 0
        while start < unit.size:
            while offset + start >= bounds[current] and current < count - 1:
                current += 1
            stop = min(unit.size, bounds[current] - offset)
            parts[current].append(Segment(unit, start, stop))
            start = stop
        offset += unit.size
    return [part for part in parts if part]


def units_digest(units: Sequence[Unit]) -> str:
    """A digest of the list of units (names, weights, what else the converter attached), for ``--resume``."""
    digest = hashlib.sha256()
    for unit in units:
        digest.update(json.dumps([unit.name, unit.size, unit.splittable, unit.info], default=str).encode())
    return digest.hexdigest()


def find_files(
    inputs: Sequence[str],
    converter: str,
    what: str,
    suffixes: tuple[str, ...],
    hidden: tuple[str, ...] = (".",),
) -> list[str]:
    """The files named by ``inputs``, in order; a folder gives its files (at any depth, sorted) whose names
    end with one of ``suffixes`` and do not start with ``hidden``.

    Raises:
        InputError: No input, a folder without such files, or a path that does not exist; the message
            names the converter and the path.
    """
    if not inputs:
        raise InputError(f"{converter}: no input given: name {what} or folders")
    files: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(top, name)
                for top, _, names in os.walk(item)
                for name in names
                if name.endswith(suffixes) and not name.startswith(hidden)
            )
            if not found:
                raise InputError(f"{converter}: folder {item} holds no {', '.join(suffixes)} files")
            files += found
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise InputError(f"{converter}: {item} does not exist: give {what} or folders")
    return files
