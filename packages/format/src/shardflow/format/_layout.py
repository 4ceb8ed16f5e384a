"""The byte layouts both sides share: the MDS shard header and the ``.meta`` file of text shards.

Both start the same way: ``uint32 samples``, then ``uint32 offsets[samples + 1]``, then the shard's JSON
config. In an MDS shard the offsets point into the same file (the samples follow the config); in a
``.meta`` file they point into the shard's data file (one line per sample) and the config ends the file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

__all__ = ["COUNT", "OFFSET", "OFFSET_DTYPE", "header_size", "read_count", "offsets_array", "head_chunks"]

COUNT = struct.Struct("<I")  # The sample count.
OFFSET = struct.Struct("<I")  # One entry of the offsets table...
OFFSET_DTYPE = np.dtype("<u4")  # ... and as numpy reads and writes it.


def header_size(count: int, config_size: int = 0) -> int:
    """Bytes in front of the config's end: the sample count, ``count + 1`` offsets and the config.

    With ``config_size=0`` it is where the config starts (the end of the offsets table).
    """
    return COUNT.size + OFFSET.size * (count + 1) + config_size


def read_count(buf: Any) -> int:
    """The sample count at the start of ``buf`` (at least ``COUNT.size`` bytes)."""
    return int(COUNT.unpack_from(buf)[0])


def offsets_array(buf: Any, count: int) -> np.ndarray:
    """The offsets table of ``buf`` as a read-only numpy view (``count + 1`` values)."""
    return np.frombuffer(buf, OFFSET_DTYPE, count + 1, COUNT.size)


def head_chunks(count: int, offsets: Iterable[bytes], config: bytes) -> Iterator[bytes]:
    """The bytes of a header in order: the count, the offsets table (as the writer's chunks), the config."""
    yield COUNT.pack(count)
    yield from offsets
    yield config
