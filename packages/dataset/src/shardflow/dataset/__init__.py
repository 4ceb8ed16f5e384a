"""shardflow.dataset: StreamingDataset, Stream and StreamingDataLoader over shards in any store."""

from shardflow.dataset._version import __version__
from shardflow.dataset.dataset import BATCHING_METHODS, StreamingDataset
from shardflow.dataset.errors import (
    DatasetConfigError,
    DatasetError,
    EpochLedgerError,
    IndexNotFoundError,
    NoShardsError,
    ShardWaitTimeout,
    StateDictError,
)
from shardflow.dataset.loader import StreamingDataLoader
from shardflow.dataset.registry import StreamRegistry, streams_registry
from shardflow.dataset.stream import Stream, default_cache_folder
from shardflow.dataset.typed import (
    StreamingC4,
    StreamingCIFAR10,
    StreamingImageFolder,
    StreamingImageNet,
    StreamingText,
)
from shardflow.dataset.util import clean_stale_shared_memory
from shardflow.dataset.world import World

__all__ = [
    "__version__",
    "StreamingDataset",
    "Stream",
    "StreamingDataLoader",
    "World",
    "StreamingImageFolder",
    "StreamingImageNet",
    "StreamingCIFAR10",
    "StreamingText",
    "StreamingC4",
    "BATCHING_METHODS",
    "default_cache_folder",
    "clean_stale_shared_memory",
    "DatasetError",
    "DatasetConfigError",
    "StateDictError",
    "EpochLedgerError",
    "IndexNotFoundError",
    "NoShardsError",
    "StreamRegistry",
    "streams_registry",
    "ShardWaitTimeout",
]
