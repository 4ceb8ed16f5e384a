"""shardflow.plan: size a training run before paying for it.

``plan_epoch`` simulates one epoch of ``StreamingDataset`` over a world (nodes, ranks, workers) with the
library's own sample order (``shardflow.shuffle``), a node's network and cache: downloads over time, cache
use, stalls, time to first batch, the smallest workable ``cache_limit`` and shuffle quality.
``read_dataset`` takes the shards from an index (local or remote), ``synthetic_dataset`` from a
description; ``write_report`` draws the plots (the ``[plot]`` extra: matplotlib). The command is
``shardflow plan`` (or ``python -m shardflow.plan``). Importing this package loads neither numba nor any
sibling package: they load when a plan runs.
"""

from shardflow.plan._version import __version__
from shardflow.plan.errors import MissingDependencyError, PlanError, PlanInputError
from shardflow.plan.report import write_report
from shardflow.plan.shapes import DatasetShape, parse_bytes, parse_count, read_dataset, synthetic_dataset
from shardflow.plan.simulate import Plan, PlanConfig, plan_epoch

__all__ = [
    "__version__",
    "PlanError",
    "PlanInputError",
    "MissingDependencyError",
    "DatasetShape",
    "read_dataset",
    "synthetic_dataset",
    "parse_bytes",
    "parse_count",
    "PlanConfig",
    "Plan",
    "plan_epoch",
    "write_report",
]
