"""shardflow.convert: converters from other dataset formats into MDS shards, with module CLIs.

Each converter is a module with a ``main()`` (``python -m shardflow.convert.<name> --help``);
``python -m shardflow.convert`` lists them. Heavy readers (Pillow, pyarrow, ...) are extras, imported
only when a conversion needs them.
"""

from shardflow.convert._version import __version__
from shardflow.convert.errors import ConvertError, InputError, MissingDependencyError, OutputExistsError

__all__ = [
    "__version__",
    "ConvertError",
    "InputError",
    "OutputExistsError",
    "MissingDependencyError",
]
