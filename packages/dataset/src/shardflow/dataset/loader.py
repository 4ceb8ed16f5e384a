"""StreamingDataLoader: a torch DataLoader that saves and resumes its position and reads whole batches."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import torch
from torch.utils.data import DataLoader, default_collate
from torch.utils.data.dataloader import _InfiniteConstantSampler

from shardflow.dataset._bundles import unbundle
from shardflow.dataset._collate import read_spans, to_tensors
from shardflow.dataset._iteration import ItemGroups
from shardflow.dataset._slots import BatchSlots, SlotSender
from shardflow.dataset._threads import GroupReaders, ThreadWorkers
from shardflow.dataset.dataset import StreamingDataset
from shardflow.dataset.world import WorkerSlot

__all__ = ["StreamingDataLoader", "WORKER_KINDS"]

WORKER_KINDS = ("process", "thread")

logger = logging.getLogger(__name__)


def batch_length(batch: Any) -> int:
    """Samples in a collated batch: a mapping's first value, a tensor, or a sequence's first item."""
    if isinstance(batch, dict) or hasattr(batch, "values") and hasattr(batch, "keys"):
        for value in batch.values():
            return len(value)
        raise ValueError("the batch is an empty mapping: it has no samples to count")
    if isinstance(batch, torch.Tensor):
        return len(batch)
    return len(batch[0])


class _BatchReads:
    """The loader as torch's iterator sees it on the batch path: the loader's attributes, except that the
    dataset yields whole batches itself (no batch_size, drop_last or batch sampler for torch to apply) and
    workers send them through ``sender``. The loader keeps reporting the user's arguments."""

    def __init__(self, loader: StreamingDataLoader, sender: SlotSender) -> None:
        self._loader = loader
        self.batch_size = None
        self.drop_last = False
        self.collate_fn = sender
        self.sampler = self._index_sampler = _InfiniteConstantSampler()
        self.batch_sampler = None
        self._auto_collation = False
        self._IterableDataset_len_called = None  # the iterator counts bundles, not batches
        self.pin_memory = False  # the batch path pins its CPU tensors itself (to_tensors), never GPU ones

    def __getattr__(self, name: str) -> Any:
        if name == "_loader":  # not yet set (a copy being made)
            raise AttributeError(name)
        return getattr(self._loader, name)


class StreamingDataLoader(DataLoader):
    """A ``torch.utils.data.DataLoader`` with ``state_dict()`` / ``load_state_dict()`` to resume mid-epoch.

    It takes DataLoader's arguments. Over a :class:`StreamingDataset` it also:

    - numbers each ``iter(loader)``'s epoch in this process before its workers start, so that
      ``state_dict()`` knows it at once (torch's own ``DataLoader`` advances epochs too: see the package
      README);
    - takes its ``batch_size`` into a dataset that has none, and refuses a dataset with another one, so
      that its batches are the dataset's and a resumed run continues exactly;
    - makes ``load_state_dict`` take effect on the next ``iter(loader)``, restarting persistent workers
      that hold an older state;
    - reads whole batches at once (``batch_reads``, default on when the dataset's ``get_item`` and
      ``__getitem__`` are not overridden and no ``collate_fn`` is given): fixed-size numeric columns are
      gathered per shard as arrays and become tensors without a Python step per sample; workers send
      batches a few at a time (``prefetch_factor`` counts these bundles), yielded in the one-by-one
      order; forked workers hand their arrays over through shared memory rather than the pipe, and
      ``bytes`` columns as where they lie in the shard files, copied out here (see the package README
      for when). Batches equal what the per-sample path with ``default_collate`` yields. The loader's
      attributes (``batch_size``, ``drop_last``, ``collate_fn``, ``sampler``, ``batch_sampler``, ...)
      still read as a plain DataLoader's with the same arguments: only torch's iterator sees the batch
      path's own.

    With ``worker_kind="thread"``, its ``num_workers`` workers are threads of this process rather than
    processes: they share this process's open shards (the dataset's :attr:`~StreamingDataset.pool`) and
    each reads its own slice of the same epoch, so the batches are those of as many worker processes, in
    the same order, and a ``state_dict`` saved under one kind resumes exactly under the other. Nothing is
    pickled and no process starts: the first batch comes sooner and memory is shared; it pays when the
    per-sample work (e.g. an image decoder) releases the GIL (see the package README).
    ``worker_init_fn(k)`` runs in thread ``k``; ``multiprocessing_context`` and ``persistent_workers`` do
    not apply (threads start at each ``iter()``), nor does ``get_worker_info()`` (None in a thread).

    Args:
        dataset: The dataset.
        *args: DataLoader's positional arguments.
        batch_reads: Force the batch path on (True) or off (False); None decides as above.
        worker_kind: ``"process"`` (torch's worker processes) or ``"thread"`` (a ``StreamingDataset`` with
            ``batch_size``, no sampler or batch_sampler).
        **kwargs: DataLoader's keyword arguments.
    """

    _is_accelerate_prepared = True
    """Hugging Face accelerate's ``Accelerator.prepare`` returns the loader as it is: the dataset shards by
    rank itself, and accelerate's own sharding or batch dispatching would read only part of the data."""

    use_stateful_dataloader = True
    """accelerate's ``save_state`` / ``load_state`` then save and restore :meth:`state_dict`."""

    def __init__(
        self,
        dataset: Any,
        *args: Any,
        batch_reads: bool | None = None,
        worker_kind: str = "process",
        **kwargs: Any,
    ) -> None:
        self._batch_reads: tuple[int, bool] | None = None
        self._sender = SlotSender()
        self._inner: _BatchReads | None = None
        self._loader_batch: int | None = args[0] if args else kwargs.get("batch_size", 1)
        if worker_kind not in WORKER_KINDS:
            raise ValueError(f"worker_kind={worker_kind!r} is unknown: use one of {', '.join(WORKER_KINDS)}")
        if worker_kind == "thread" and (
            not isinstance(dataset, StreamingDataset)
            or args
            or self._loader_batch is None
            or kwargs.get("sampler") is not None
            or kwargs.get("batch_sampler") is not None
        ):
            raise ValueError(
                "worker_kind='thread' reads a StreamingDataset's own slices of the epoch in batches: give "
                "a StreamingDataset, batch_size as a keyword (not None), and no sampler or batch_sampler; or "
                "use worker_kind='process'"
            )
        self.worker_kind = worker_kind
        if isinstance(dataset, StreamingDataset):
            dataset.agree_batch_size(self._loader_batch)
        if isinstance(dataset, StreamingDataset) and not args:
            batch_size = kwargs.get("batch_size", 1)
            eligible = (
                batch_size is not None
                and kwargs.get("collate_fn") is None
                and kwargs.get("sampler") is None
                and kwargs.get("batch_sampler") is None
                and dataset.supports_batch_reads
            )
            if batch_reads is None:
                batch_reads = eligible
            if batch_reads:
                if not eligible:
                    raise ValueError(
                        "batch_reads=True needs a batch_size, no collate_fn, sampler or batch_sampler, and a "
                        "dataset that does not override get_item or __getitem__"
                    )
                self._batch_reads = (batch_size, bool(kwargs.get("drop_last", False)))
                self._inner = _BatchReads(self, self._sender)
        # DataLoader gets the user's arguments as given, so that batch_size, drop_last, collate_fn, sampler,
        # batch_sampler and len() read as a plain DataLoader's; only torch's iterator sees the batch path's.
        super().__init__(dataset, *args, **kwargs)
        self.num_samples_yielded = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        self.num_samples_yielded = 0
        dataset = self.dataset
        streaming = dataset if isinstance(dataset, StreamingDataset) else None
        if streaming is not None:
            streaming.agree_batch_size(self._loader_batch)  # a loaded state may have given it one
        if streaming is not None and self.worker_kind == "thread" and self.num_workers > 0:
            batches: Iterator[Any] = self._thread_batches(streaming)
        else:
            batches = self._torch_batches(streaming)
        for batch in batches:
            self.num_samples_yielded += batch_length(batch)
            yield batch

    def _torch_batches(self, streaming: StreamingDataset | None) -> Iterator[Any]:
        """The batches of torch's iterator (worker processes, or none)."""
        starts = self._starts_workers()
        if starts:
            self._sender.slots = self._new_slots()
        with contextlib.ExitStack() as started:
            if self._batch_reads is not None:
                # The iterator (and each worker, started now) takes the batch mode from the dataset; other
                # loaders of the same dataset must not see it.
                assert streaming is not None
                started.enter_context(streaming.reading_batches(*self._batch_reads))
            if streaming is not None and self.num_workers > 0:
                # Workers started now take this run from their copy; persistent ones find it by their seed
                # (else they number the run themselves, and the dataset reads it from its ledger).
                seed = None if starts else getattr(self._iterator, "_base_seed", None)
                if starts or seed is not None:
                    started.enter_context(streaming.planning_epoch(self.num_workers, seed))
            slots = self._sender.slots
            iterator = self._torch_iterator()
        batches: Iterator[Any] = iterator
        if self._batch_reads is not None:
            assert streaming is not None
            if self.num_workers > 0:
                batches = unbundle(iterator if slots is None else map(slots.take, iterator), self.num_workers)
            pin = self.pin_memory and torch.cuda.is_available()
            batches = (to_tensors(read_spans(batch, streaming.pool), pin) for batch in batches)
        return batches

    def _thread_batches(self, dataset: StreamingDataset) -> Iterator[Any]:
        """The batches of ``num_workers`` threads that read their slices of one epoch through the
        dataset's pool, in the order of as many worker processes."""
        count = self.num_workers
        epoch, offset = dataset.begin_epoch(count)
        if self._batch_reads is not None:
            batch_size, drop_last = self._batch_reads
            sources = [
                _tensors(dataset.iter_worker(WorkerSlot(k, count), epoch, offset, batch_size, drop_last))
                for k in range(count)
            ]
            readers = None
        else:
            assert self.batch_size is not None
            collate = self.collate_fn or default_collate
            readers = GroupReaders(count)
            groups = ItemGroups(readers.read, self.batch_size)
            sources = [
                _collated(
                    dataset.iter_worker(WorkerSlot(k, count), epoch, offset, groups=groups),
                    self.batch_size,
                    self.drop_last,
                    collate,
                )
                for k in range(count)
            ]
        workers = ThreadWorkers(sources, self.prefetch_factor or 2, self.timeout, self.worker_init_fn)
        pin = self.pin_memory and torch.cuda.is_available()
        try:
            for batch in workers:
                yield to_tensors(batch, pin) if pin else batch
        finally:
            workers.close()
            if readers is not None:
                readers.close()

    def _get_iterator(self) -> Any:
        """torch's iterator; on the batch path it reads the loader through :class:`_BatchReads`."""
        if self._inner is None:
            return super()._get_iterator()
        return DataLoader._get_iterator(self._inner)  # type: ignore[arg-type]

    def _torch_iterator(self) -> Any:
        """``DataLoader.__iter__``; a persistent iterator on the batch path is reset through
        :class:`_BatchReads` too."""
        if self._inner is not None and self.persistent_workers and self._iterator is not None:
            self._iterator._reset(self._inner)
            return self._iterator
        return super().__iter__()

    def _starts_workers(self) -> bool:
        """Whether the next ``_torch_iterator()`` starts worker processes."""
        return self.num_workers > 0 and not (self.persistent_workers and self._iterator is not None)

    def _new_slots(self) -> BatchSlots | None:
        """Shared-memory slots for the batch path's workers when they fork, else None (the pipe)."""
        context = self.multiprocessing_context or torch.multiprocessing
        if self._batch_reads is None or context.get_start_method() != "fork":
            return None
        return BatchSlots(self.num_workers, (self.prefetch_factor or 2) + 2, context)

    def state_dict(self) -> dict[str, Any] | None:
        """The dataset's resumption state after the batches this rank has yielded, or None for other datasets.

        Every rank is taken to have yielded as many samples as this one (ranks run in step).
        """
        dataset = self.dataset
        if not isinstance(dataset, StreamingDataset):
            return None
        num_samples = self.num_samples_yielded * dataset.world.world_size
        return dataset.state_dict_after_batches(num_samples)

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        """Resume from ``obj`` on the next ``iter(self)``; persistent workers restart to pick it up."""
        dataset = self.dataset
        if not isinstance(dataset, StreamingDataset):
            return
        dataset.load_state_dict(obj)
        iterator = getattr(self, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            logger.debug("restarting persistent workers to resume from %s", obj)
            iterator._shutdown_workers()
            self._iterator = None
        self.num_samples_yielded = 0


def _collated(
    samples: Iterator[Any], batch_size: int, drop_last: bool, collate: Callable[[list[Any]], Any]
) -> Iterator[Any]:
    """``samples`` in collated batches of ``batch_size`` (the last one partial unless ``drop_last``), as a
    DataLoader worker makes them."""
    try:
        while batch := list(islice(samples, batch_size)):
            if len(batch) < batch_size and drop_last:
                return
            yield collate(batch)
    finally:
        close = getattr(samples, "close", None)
        if close is not None:
            close()


def _tensors(batches: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``batches`` with their arrays made tensors (see ``to_tensors``); closing it closes ``batches``."""
    try:
        for batch in batches:
            yield to_tensors(batch)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
