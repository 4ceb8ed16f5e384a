"""shardflow: stream training data from object storage into PyTorch, fast, deterministically, resumably.

This module is the meta-package's facade. It imports nothing eagerly: each public name is loaded from
its package (``shardflow.format``, ...) on first use, so ``import shardflow.format`` never pulls in
torch or numba.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

__path__ = pkgutil.extend_path(__path__, __name__)

from shardflow._version import __version__  # noqa: E402

_LAZY: dict[str, str] = {
    "MDSWriter": "shardflow.format",
    "JSONWriter": "shardflow.format",
    "XSVWriter": "shardflow.format",
    "CSVWriter": "shardflow.format",
    "TSVWriter": "shardflow.format",
    "LocalDataset": "shardflow.format",
    "merge_index": "shardflow.format",
    "StreamingDataset": "shardflow.dataset",
    "Stream": "shardflow.dataset",
    "StreamingDataLoader": "shardflow.dataset",
    "World": "shardflow.dataset",
    "StreamingImageFolder": "shardflow.dataset",
    "StreamingImageNet": "shardflow.dataset",
    "StreamingCIFAR10": "shardflow.dataset",
    "StreamingText": "shardflow.dataset",
    "StreamingC4": "shardflow.dataset",
    "StreamingOutsideDTWebVid": "shardflow.dataset",
    "StreamingOutsideGIWebVid": "shardflow.dataset",
    "StreamingInsideWebVid": "shardflow.dataset",
    "StreamingPile": "shardflow.dataset",
    "StreamingEnWiki": "shardflow.dataset",
    "StreamingADE20K": "shardflow.dataset",
    "StreamingCOCO": "shardflow.dataset",
    # A no-op kept for scripts written for mosaicml-streaming (shardflow keeps no named shared memory).
    "clean_stale_shared_memory": "shardflow.dataset",
}

__all__ = ["__version__", *sorted(_LAZY)]

if TYPE_CHECKING:
    from shardflow.dataset import (
        Stream,
        StreamingADE20K,
        StreamingC4,
        StreamingCIFAR10,
        StreamingCOCO,
        StreamingDataLoader,
        StreamingDataset,
        StreamingEnWiki,
        StreamingImageFolder,
        StreamingImageNet,
        StreamingInsideWebVid,
        StreamingOutsideDTWebVid,
        StreamingOutsideGIWebVid,
        StreamingPile,
        StreamingText,
        World,
        clean_stale_shared_memory,
    )
    from shardflow.format import (
        CSVWriter,
        JSONWriter,
        LocalDataset,
        MDSWriter,
        TSVWriter,
        XSVWriter,
        merge_index,
    )


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'shardflow' has no attribute {name!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        dist = module_name.replace(".", "-")
        raise ImportError(
            f"shardflow.{name} lives in {module_name}, which is not installed: pip install {dist}"
        ) from exc
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
