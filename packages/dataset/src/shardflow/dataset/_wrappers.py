"""Refuse the framework wrappers that re-shard a loader over a dataset which already shards itself.

Hugging Face accelerate's ``prepare`` wraps a torch ``DataLoader`` over an iterable dataset either in a
``DataLoaderDispatcher`` (rank 0 reads, every rank gets a slice) or around an ``IterableDatasetShard``
(every rank reads, each keeps one batch in ``num_processes``). Over a :class:`StreamingDataset` whose world
has several ranks, each rank already reads only its own share, so either wrapper reads ``1 / num_processes``
of the data, silently. Both call the dataset's ``set_epoch`` before each epoch, so that is where the dataset
looks at who called it and refuses.
"""

from __future__ import annotations

import sys
from typing import Any

from shardflow.dataset.errors import DatasetConfigError

__all__ = ["refuse_resharding"]

# accelerate's classes that re-shard an iterable dataset, and where each keeps its number of processes.
_RESHARDERS = {
    "IterableDatasetShard": lambda wrapper: wrapper.num_processes,
    "DataLoaderDispatcher": lambda wrapper: wrapper.state.num_processes,
}


def _resharding_processes(caller: Any) -> tuple[str, int] | None:
    """``(class name, processes)`` when ``caller`` is one of accelerate's re-sharding wrappers, else None."""
    cls = type(caller)
    if not cls.__module__.startswith("accelerate.") or cls.__name__ not in _RESHARDERS:
        return None
    try:
        return cls.__name__, int(_RESHARDERS[cls.__name__](caller))
    except (AttributeError, TypeError, ValueError):  # another accelerate version: nothing to say
        return None


def refuse_resharding(dataset: Any, depth: int = 2) -> None:
    """Raise when the caller ``depth`` frames up (``set_epoch``'s caller) is an accelerate wrapper that would
    re-shard ``dataset`` over more than one process while the dataset splits its data over ranks itself.

    Raises:
        DatasetConfigError: Naming the wrapper, the share it would read and what to pass instead.
    """
    frame = sys._getframe(depth)
    found = _resharding_processes(frame.f_locals.get("self"))
    ranks = dataset.world.world_size
    if found is None or found[1] < 2 or ranks < 2:
        return
    name, processes = found
    raise DatasetConfigError(
        f"accelerate wrapped a torch DataLoader over this StreamingDataset in its {name} for {processes} "
        f"processes, but the dataset already gives each of its {ranks} ranks its own share: every epoch "
        f"would read only 1/{processes} of the data. Pass accelerator.prepare a "
        "shardflow.dataset.StreamingDataLoader instead (it is returned as it is and save_state/load_state "
        "carry its position); with transformers.Trainer use shardflow.dataset.hf.StreamingTrainer. A dataset "
        "given world=World() reads everything in each process and may be re-sharded"
    )
