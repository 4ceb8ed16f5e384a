"""shardflow.convert: converters from other dataset formats into MDS shards, with module CLIs.

Each converter is a module with a ``main()`` (``python -m shardflow.convert.<name> --help``) and a
function ``<name>_to_mds(input, Options(out=...))``; ``python -m shardflow.convert`` lists them. Heavy
readers (Pillow, pyarrow, ...) are extras, imported only when a conversion needs them.
"""

from shardflow.convert._run import Options, Summary
from shardflow.convert._version import __version__
from shardflow.convert.cifar10 import cifar10_to_mds
from shardflow.convert.errors import ConvertError, InputError, MissingDependencyError, OutputExistsError
from shardflow.convert.imagefolder import imagefolder_to_mds
from shardflow.convert.jsonl import jsonl_to_mds
from shardflow.convert.parquet import parquet_to_mds
from shardflow.convert.webdataset import webdataset_to_mds

__all__ = [
    "__version__",
    "Options",
    "Summary",
    "cifar10_to_mds",
    "imagefolder_to_mds",
    "jsonl_to_mds",
    "parquet_to_mds",
    "webdataset_to_mds",
    "ConvertError",
    "InputError",
    "OutputExistsError",
    "MissingDependencyError",
]
