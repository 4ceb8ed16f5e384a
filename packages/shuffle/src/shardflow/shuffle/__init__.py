"""shardflow.shuffle: the sample order of an epoch, computed by each worker for itself.

Shuffle (``get_shuffle``), partition (``get_partitions``) and stream sampling (``get_sampling``,
``resolve_stream_weights``) with mosaicml-streaming's names and guarantees, jitted with numba; and
``SampleOrder.worker_sample_ids``, which gives one DataLoader worker its ids for an epoch without building
the epoch. ``SampleOrder(batching_method=...)`` also groups batches as the reference's ``stratified``,
``per_stream`` and ``device_per_stream`` (``batching``). Compiled kernels are cached on disk (see
``NUMBA_CACHE_DIR`` in the README).
"""

from shardflow.shuffle._version import __version__
from shardflow.shuffle.batching import BATCHING_METHODS
from shardflow.shuffle.errors import ShuffleError
from shardflow.shuffle.order import (
    SampleOrder,
    WorldShape,
    default_num_canonical_nodes,
    default_shuffle_block_size,
)
from shardflow.shuffle.partition import PARTITION_ALGOS, get_partition_slice, get_partitions
from shardflow.shuffle.sampling import (
    SAMPLING_METHODS,
    StreamWeights,
    epoch_units,
    get_sampling,
    resolve_stream_weights,
)
from shardflow.shuffle.shuffle import SHUFFLE_ALGOS, get_shuffle

__all__ = [
    "__version__",
    "ShuffleError",
    "BATCHING_METHODS",
    "SampleOrder",
    "WorldShape",
    "default_num_canonical_nodes",
    "default_shuffle_block_size",
    "PARTITION_ALGOS",
    "get_partitions",
    "get_partition_slice",
    "SAMPLING_METHODS",
    "StreamWeights",
    "get_sampling",
    "epoch_units",
    "resolve_stream_weights",
    "SHUFFLE_ALGOS",
    "get_shuffle",
]
