"""shardflow.dataset: StreamingDataset, Stream and StreamingDataLoader over shards in any store.

The public names load on first use (PEP 562), so that ``import shardflow.dataset.cache`` (the node cache,
which the ``shardflow`` command uses) never imports torch; ``from shardflow.dataset import
StreamingDataset`` loads the modules it needs then.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from shardflow.dataset._version import __version__

# Each public name (``__all__``) and the module of the package that defines it.
_LAZY: dict[str, str] = {
    "StreamingDataset": "dataset",
    "BATCHING_METHODS": "dataset",
    "Stream": "stream",
    "default_cache_folder": "stream",
    "StreamingDataLoader": "loader",
    "World": "world",
    "StreamingImageFolder": "typed",
    "StreamingImageNet": "typed",
    "StreamingCIFAR10": "typed",
    "StreamingText": "typed",
    "StreamingC4": "typed",
    "clean_stale_shared_memory": "util",
    "DatasetError": "errors",
    "DatasetConfigError": "errors",
    "StateDictError": "errors",
    "EpochLedgerError": "errors",
    "IndexNotFoundError": "errors",
    "NoShardsError": "errors",
    "ShardWaitTimeout": "errors",
    "StreamRegistry": "registry",
    "streams_registry": "registry",
    "WorkerSlot": "world",
    "StreamingCOCO": "vision",
    "StreamingADE20K": "vision",
    "StreamingEnWiki": "text",
    "StreamingPile": "text",
    "StreamingInsideWebVid": "multimodal",
    "StreamingOutsideGIWebVid": "multimodal",
    "StreamingOutsideDTWebVid": "multimodal",
}

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
    "WorkerSlot",
    "StreamingCOCO",
    "StreamingADE20K",
    "StreamingEnWiki",
    "StreamingPile",
    "StreamingInsideWebVid",
    "StreamingOutsideGIWebVid",
    "StreamingOutsideDTWebVid",
]

if TYPE_CHECKING:
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
    from shardflow.dataset.multimodal import (
        StreamingInsideWebVid,
        StreamingOutsideDTWebVid,
        StreamingOutsideGIWebVid,
    )
    from shardflow.dataset.registry import StreamRegistry, streams_registry
    from shardflow.dataset.stream import Stream, default_cache_folder
    from shardflow.dataset.text import StreamingEnWiki, StreamingPile
    from shardflow.dataset.typed import (
        StreamingC4,
        StreamingCIFAR10,
        StreamingImageFolder,
        StreamingImageNet,
        StreamingText,
    )
    from shardflow.dataset.util import clean_stale_shared_memory
    from shardflow.dataset.vision import StreamingADE20K, StreamingCOCO
    from shardflow.dataset.world import WorkerSlot, World


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shardflow.dataset' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"shardflow.dataset.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
