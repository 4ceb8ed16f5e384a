"""What a plan needs of a dataset: each shard's samples and bytes, from an index or a synthetic description.

``shardflow.format`` (the index) and ``shardflow.storage`` (a remote index) are imported inside the
functions that need them, so that ``import shardflow.plan`` stays light.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from shardflow.plan.errors import PlanInputError

__all__ = ["DatasetShape", "read_dataset", "synthetic_dataset", "parse_bytes", "parse_count"]

logger = logging.getLogger(__name__)

_UNITS = {"": 1, "b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}
_COUNTS = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}
_NUMBER = re.compile(r"^\s*([0-9][0-9_,]*(?:\.[0-9]*)?)\s*([a-z]*)\s*$")


def _parse(name: str, value: int | float | str, units: dict[str, int], example: str) -> int:
    if isinstance(value, bool):
        raise PlanInputError(f"{name}={value!r} must be {example}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        found = _NUMBER.match(str(value).lower())
        if not found or found.group(2) not in units:
            raise PlanInputError(f"{name}={value!r} is not {example}")
        number = float(found.group(1).replace(",", "").replace("_", "")) * units[found.group(2)]
    if not np.isfinite(number) or number < 0:
        raise PlanInputError(f"{name}={value!r} must be 0 or more")
    return int(number)


def parse_bytes(name: str, value: int | float | str) -> int:
    """Bytes given as a number or a string such as ``"512mb"``, ``"1.5gb"`` (powers of 1024, as
    ``StreamingDataset(cache_limit=...)`` reads them).

    Raises:
        PlanInputError: Anything else, or a negative size (the message names ``name``).
    """
    return _parse(name, value, _UNITS, "a number of bytes or a string such as '512mb', '1.5gb'")


def parse_count(name: str, value: int | float | str) -> int:
    """A count given as a number or a string such as ``"100k"``, ``"2m"``, ``"10b"`` (powers of 1000).

    Raises:
        PlanInputError: Anything else, or a negative count (the message names ``name``).
    """
    return _parse(name, value, _COUNTS, "a count or a string such as '100k', '2m', '10b'")


@dataclass(frozen=True, eq=False)
class DatasetShape:
    """The shards of a dataset as a plan sees them.

    Attributes:
        samples: Samples of each shard, in index order.
        download_bytes: Bytes fetched for each shard (its compressed files when compressed).
        footprint_bytes: Bytes each shard takes on disk while it arrives (compressed and raw side by side),
            what the cache reserves for a download.
        kept_bytes: Bytes each shard keeps in the cache once it has arrived (raw; plus compressed with
            ``keep_zip``).
        source: Where it came from (an index's path or URL, or ``synthetic``).
        index_bytes: Size of ``index.json`` (each rank fetches it first).
    """

    samples: NDArray[np.int64]
    download_bytes: NDArray[np.int64]
    footprint_bytes: NDArray[np.int64]
    kept_bytes: NDArray[np.int64]
    source: str
    index_bytes: int = 0
    _starts: NDArray[np.int64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        arrays = (self.samples, self.download_bytes, self.footprint_bytes, self.kept_bytes)
        if len({len(a) for a in arrays}) != 1 or not len(self.samples):
            raise PlanInputError(f"{self.source}: a dataset needs at least one shard, with its sizes")
        if int(self.samples.sum()) < 1:
            raise PlanInputError(f"{self.source}: its shards hold no samples")
        object.__setattr__(self, "_starts", np.concatenate([[0], np.cumsum(self.samples)]).astype(np.int64))

    @property
    def num_samples(self) -> int:
        return int(self._starts[-1])

    @property
    def num_shards(self) -> int:
        return len(self.samples)

    @property
    def total_download_bytes(self) -> int:
        return int(self.download_bytes.sum())

    @property
    def total_kept_bytes(self) -> int:
        return int(self.kept_bytes.sum())

    def shard_of(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        """The shard of each sample id."""
        return np.searchsorted(self._starts, ids, side="right").astype(np.int64) - 1

    def describe(self) -> dict[str, object]:
        return {
            "source": self.source,
            "shards": self.num_shards,
            "samples": self.num_samples,
            "download_bytes": self.total_download_bytes,
            "cached_bytes": self.total_kept_bytes,
            "largest_shard_bytes": int(self.footprint_bytes.max()),
        }


def _is_url(text: str) -> bool:
    head, sep, _ = text.partition("://")
    return bool(sep) and len(head) > 1


def read_dataset(source: str, split: str | None = None, keep_zip: bool = False) -> DatasetShape:
    """The shards of the dataset at ``source``: a storage URL (``s3://...``), a local folder or its
    ``index.json``; ``split`` names a sub-folder.

    Raises:
        PlanInputError: There is no readable index there (the message names the path or URL).
    """
    from shardflow.format import FormatError, read_shards

    where = source
    with tempfile.TemporaryDirectory(prefix="shardflow-plan-") as scratch:
        if _is_url(source):
            from shardflow.storage import ObjectNotFoundError, StorageError, from_url

            root = source.rstrip("/") + ("/" + split.strip("/") if split else "")
            where = f"{root}/index.json"
            index = Path(scratch) / "index.json"
            try:
                from_url(root).download("index.json", index)
            except ObjectNotFoundError:
                raise PlanInputError(f"{where} does not exist: check the URL and the split") from None
            except (StorageError, ImportError) as exc:
                raise PlanInputError(f"cannot read {where}: {exc}") from None
            split = None
        else:
            path = Path(os.path.expanduser(source))
            if not path.exists():
                raise PlanInputError(f"{path} does not exist: give a dataset folder, its index.json or a URL")
            index = path if path.is_file() else (path / split if split else path) / "index.json"
            where = str(index)
            if not index.is_file():
                raise PlanInputError(f"{index} does not exist: is {path} a dataset folder (check the split)?")
        try:
            shards = read_shards(index, allow_unsafe_types=True)  # nothing is decoded
        except (ValueError, OSError, FormatError) as exc:
            raise PlanInputError(f"{where} is not a readable shardflow/MDS index: {exc}") from None
        index_bytes = index.stat().st_size
    raw = np.array([sum(f.bytes for f in s.raw_files) for s in shards], np.int64)
    zipped = np.array([sum(f.bytes for f in s.zip_files) for s in shards], np.int64)
    has_zip = np.array([bool(s.zip_files) for s in shards])
    logger.debug("read %d shards from %s", len(shards), where)
    return DatasetShape(
        samples=np.array([s.samples for s in shards], np.int64),
        download_bytes=np.where(has_zip, zipped, raw),
        footprint_bytes=raw + zipped,
        kept_bytes=raw + (zipped if keep_zip else 0),
        source=where,
        index_bytes=index_bytes,
    )


def synthetic_dataset(
    num_samples: int,
    samples_per_shard: int,
    sample_bytes: float,
    spread: float = 0.0,
    compression_ratio: float = 1.0,
    seed: int = 0,
) -> DatasetShape:
    """A dataset described by its size: ``num_samples`` samples of ``sample_bytes`` on average, in shards of
    ``samples_per_shard`` samples (the last one shorter); ``spread`` > 0 draws each shard's sample count
    lognormally with that sigma around the mean (seeded); ``compression_ratio`` < 1 makes shards download
    that share of their raw bytes (compressed) and take raw + compressed while they arrive.

    Raises:
        PlanInputError: A count, size or ratio out of range (the message names it).
    """
    if num_samples < 1:
        raise PlanInputError(f"samples={num_samples} must be 1 or more")
    if samples_per_shard < 1:
        raise PlanInputError(f"shard_samples={samples_per_shard} must be 1 or more")
    if not sample_bytes > 0:
        raise PlanInputError(f"sample_bytes={sample_bytes} must be more than 0")
    if not spread >= 0:
        raise PlanInputError(f"spread={spread} must be 0 or more (the sigma of lognormal shard sizes)")
    if not 0 < compression_ratio <= 1:
        raise PlanInputError(f"compression_ratio={compression_ratio} must be in (0, 1]; 1 is uncompressed")
    count = -(-num_samples // samples_per_shard)
    if spread > 0:
        rng = np.random.default_rng(seed)
        sizes = np.zeros(0, np.int64)
        while (
            int(sizes.sum()) < num_samples
        ):  # mean shard size is samples_per_shard: one round, nearly always
            draws = rng.lognormal(-spread * spread / 2, spread, 2 * count + 16)
            sizes = np.concatenate(
                [sizes, np.maximum(1, np.round(draws * samples_per_shard)).astype(np.int64)]
            )
        ends = np.cumsum(sizes)
        cut = int(np.searchsorted(ends, num_samples))
        samples = sizes[: cut + 1].copy()
        samples[-1] -= int(ends[cut]) - num_samples
    else:
        samples = np.full(count, samples_per_shard, np.int64)
        samples[-1] = num_samples - samples_per_shard * (count - 1)
    raw = np.round(samples * float(sample_bytes)).astype(np.int64)
    zipped = (
        np.round(raw * compression_ratio).astype(np.int64) if compression_ratio < 1 else np.zeros_like(raw)
    )
    return DatasetShape(
        samples=samples.astype(np.int64),
        download_bytes=zipped if compression_ratio < 1 else raw,
        footprint_bytes=raw + zipped,
        kept_bytes=raw,
        source="synthetic",
        index_bytes=200 * len(samples),
    )
