"""shardflow.format: MDS (byte-compatible with mosaicml-streaming), JSONL, CSV and TSV shards, and the
registry of shard formats (:mod:`shardflow.format.formats`) that readers of other formats join."""

from shardflow.format._atomic import TEMP_NAME, write_atomic
from shardflow.format._version import __version__
from shardflow.format._write_shard import parse_size
from shardflow.format.compression import compress, decompress, get_compressions, is_compression
from shardflow.format.encodings import (
    get_mds_encoded_size,
    get_mds_encodings,
    is_mds_encoding,
    mds_decode,
    mds_encode,
)
from shardflow.format.errors import (
    EncodingError,
    EncodingTypeError,
    FormatError,
    IndexDecodeError,
    IndexFormatError,
    MissingDependencyError,
    SampleKeysError,
    ShardFormatError,
    ShardHashError,
    ShardMissingError,
    ShardTooLargeError,
    UnknownArgumentError,
    UnknownEncodingError,
    UnknownFormatError,
    UnknownNameError,
    UnsafeEncodingError,
    UnsupportedColumnError,
)
from shardflow.format.formats import Capability, ShardFormat, get_format, known_formats, register_format
from shardflow.format.hashing import get_hash, get_hashes, is_hash
from shardflow.format.index import read_index
from shardflow.format.merge import merge_index
from shardflow.format.reader import LocalDataset
from shardflow.format.shards import Columns, ShardFile, ShardInfo, ShardLocator, ShardReader, read_shards
from shardflow.format.writers import CSVWriter, JSONWriter, MDSWriter, TSVWriter, XSVWriter

__all__ = [
    "__version__",
    "MDSWriter",
    "JSONWriter",
    "XSVWriter",
    "CSVWriter",
    "TSVWriter",
    "LocalDataset",
    "merge_index",
    "read_index",
    "ShardInfo",
    "ShardFile",
    "ShardReader",
    "Columns",
    "ShardLocator",
    "read_shards",
    "ShardFormat",
    "Capability",
    "register_format",
    "get_format",
    "known_formats",
    "parse_size",
    "TEMP_NAME",
    "write_atomic",
    "get_mds_encodings",
    "is_mds_encoding",
    "get_mds_encoded_size",
    "mds_encode",
    "mds_decode",
    "get_compressions",
    "is_compression",
    "compress",
    "decompress",
    "get_hashes",
    "is_hash",
    "get_hash",
    "FormatError",
    "EncodingError",
    "EncodingTypeError",
    "SampleKeysError",
    "UnknownNameError",
    "UnknownArgumentError",
    "UnknownEncodingError",
    "UnknownFormatError",
    "IndexFormatError",
    "IndexDecodeError",
    "ShardFormatError",
    "ShardMissingError",
    "ShardHashError",
    "ShardTooLargeError",
    "UnsafeEncodingError",
    "MissingDependencyError",
    "UnsupportedColumnError",
]
