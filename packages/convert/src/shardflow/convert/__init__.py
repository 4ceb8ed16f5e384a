"""shardflow.convert: converters from other dataset formats into MDS shards, with module CLIs.

Each converter is a module with a ``main()`` (``python -m shardflow.convert.<name> --help``) and a
function ``<name>_to_mds(input, Options(out=...))``; ``python -m shardflow.convert`` lists them. Heavy
readers (Pillow, pyarrow, ...) are extras, imported only when a conversion needs them.

The converter functions are loaded on first use: importing the package imports no converter module, so
``python -m shardflow.convert.jsonl`` runs the module once, as ``__main__`` (no runpy warning).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from shardflow.convert._run import Options, Summary
from shardflow.convert._version import __version__
from shardflow.convert.errors import ConvertError, InputError, MissingDependencyError, OutputExistsError

_LAZY = {
    "cifar10_to_mds": "cifar10",
    "imagefolder_to_mds": "imagefolder",
    "jsonl_to_mds": "jsonl",
    "parquet_to_mds": "parquet",
    "webdataset_to_mds": "webdataset",
    "laion_to_mds": "laion",
    "ade20k_to_mds": "ade20k",
    "coco_to_mds": "coco",
    "enwiki_to_mds": "enwiki",
    "pile_to_mds": "pile",
    "webvid_to_mds": "webvid",
}

__all__ = [
    "__version__",
    "Options",
    "Summary",
    "cifar10_to_mds",
    "imagefolder_to_mds",
    "jsonl_to_mds",
    "parquet_to_mds",
    "webdataset_to_mds",
    "coco_to_mds",
    "ade20k_to_mds",
    "laion_to_mds",
    "enwiki_to_mds",
    "pile_to_mds",
    "webvid_to_mds",
    "ConvertError",
    "InputError",
    "OutputExistsError",
    "MissingDependencyError",
]

if TYPE_CHECKING:
    from shardflow.convert.ade20k import ade20k_to_mds
    from shardflow.convert.cifar10 import cifar10_to_mds
    from shardflow.convert.coco import coco_to_mds
    from shardflow.convert.enwiki import enwiki_to_mds
    from shardflow.convert.imagefolder import imagefolder_to_mds
    from shardflow.convert.jsonl import jsonl_to_mds
    from shardflow.convert.laion import laion_to_mds
    from shardflow.convert.parquet import parquet_to_mds
    from shardflow.convert.pile import pile_to_mds
    from shardflow.convert.webdataset import webdataset_to_mds
    from shardflow.convert.webvid import webvid_to_mds


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shardflow.convert' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"shardflow.convert.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
