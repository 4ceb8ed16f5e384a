"""Batches from forked DataLoader workers to the trainer through shared memory rather than the pipe.

A worker's bundle of batches (see ``_bundles``) reaches the trainer pickled through one pipe, which on
Linux moves 64 KiB per wake-up: a 768 KB batch of images costs more to send than to read. :class:`BatchSlots`
is made by the trainer before its workers fork: an anonymous shared mapping of ``slots`` slots per worker
and, per worker, a semaphore counting its free slots. A worker writes a bundle's numpy arrays and lists of
``bytes`` into its next slot and sends only where they lie (:class:`InSlot`); the trainer copies them out
and frees the slot. A worker that finds no free slot, or a bundle that does not fit one, sends it as it is.

Slots are taken and freed in the same order (a worker's bundles reach the trainer in the order it sent
them), so the count alone says which slot is next. A bundle the trainer drops unread (an abandoned
iteration) keeps its slot taken: that worker then has fewer slots, never a slot still being read.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import Any

import numpy as np

from shardflow.dataset._bundles import Bundle

__all__ = ["BatchSlots", "InSlot", "SlotSender"]

SLOT_BYTES = 16 << 20
"""The room of one slot; it costs memory only once written (bigger batches go through the pipe)."""

_ALIGN = 64


@dataclass(frozen=True)
class InSlot:
    """One column of a batch, written into slot ``slot`` of worker ``worker`` at ``offset``.

    ``lengths`` is None for an array of ``dtype`` and ``shape``; else the column is a list of ``bytes`` of
    these lengths, end to end.
    """

    worker: int
    slot: int
    offset: int
    dtype: str
    shape: tuple[int, ...]
    lengths: tuple[int, ...] | None = None


class BatchSlots:
    """Shared-memory slots for the batches of ``workers`` forked workers, ``slots`` each.

    Args:
        workers: The DataLoader's ``num_workers``.
        slots: Slots per worker: room for the batches it has sent and the trainer has not yet taken.
        context: The multiprocessing context the workers start from (its semaphores are shared).
    """

    def __init__(self, workers: int, slots: int, context: Any) -> None:
        self.slots = slots
        self._memory = mmap.mmap(-1, workers * slots * SLOT_BYTES)  # MAP_SHARED: seen by forked workers
        self._free = [context.Semaphore(slots) for _ in range(workers)]
        self._next = 0  # a worker's next slot (each forked worker counts its own)

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("BatchSlots serve forked workers only: they cannot be pickled")

    def put(self, bundle: Bundle) -> Bundle:
        """In worker ``bundle.worker``: ``bundle`` with its batches' numpy arrays and lists of ``bytes``
        moved into a free slot of that worker, as :class:`InSlot` values; ``bundle`` itself when nothing
        would move, when it does not fit or when no slot is free."""
        worker = bundle.worker
        moved = [
            (j, name, value)
            for j, batch in enumerate(bundle.batches)
            if isinstance(batch, dict)
            for name, value in batch.items()
            if _movable(value)
        ]
        sizes = [-(-_size(value) // _ALIGN) * _ALIGN for _, _, value in moved]
        if not moved or sum(sizes) > SLOT_BYTES:
            return bundle
        if not self._free[worker].acquire(block=False):
            return bundle
        slot, self._next = self._next, (self._next + 1) % self.slots
        offset = (worker * self.slots + slot) * SLOT_BYTES
        batches = [dict(batch) if isinstance(batch, dict) else batch for batch in bundle.batches]
        for (j, name, value), size in zip(moved, sizes, strict=True):
            batches[j][name] = self._write(value, worker, slot, offset)
            offset += size
        return Bundle(bundle.worker, batches)

    def _write(self, value: np.ndarray | list[bytes], worker: int, slot: int, offset: int) -> InSlot:
        memory = self._memory
        if isinstance(value, np.ndarray):
            np.ndarray(value.shape, value.dtype, buffer=memory, offset=offset)[...] = value
            return InSlot(worker, slot, offset, value.dtype.str, value.shape)
        position = offset
        for item in value:
            end = position + len(item)
            memory[position:end] = item
            position = end
        return InSlot(worker, slot, offset, "", (len(value),), tuple(map(len, value)))

    def take(self, bundle: Bundle) -> Bundle:
        """In the trainer: ``bundle`` with its :class:`InSlot` values copied out, and their slot freed."""
        taken: set[tuple[int, int]] = set()
        batches = []
        for batch in bundle.batches:
            if isinstance(batch, dict):
                batch = {name: self._read(value, taken) for name, value in batch.items()}
            batches.append(batch)
        for worker, _ in taken:
            self._free[worker].release()
        return Bundle(bundle.worker, batches)

    def _read(self, value: Any, taken: set[tuple[int, int]]) -> Any:
        """``value`` copied out of its slot (noted in ``taken``) when it is an :class:`InSlot`."""
        if not isinstance(value, InSlot):
            return value
        taken.add((value.worker, value.slot))
        memory = self._memory
        if value.lengths is None:
            dtype = np.dtype(value.dtype)
            count = int(np.prod(value.shape, dtype=np.int64))
            return np.frombuffer(memory, dtype, count, value.offset).reshape(value.shape).copy()
        bounds = list(accumulate(value.lengths, initial=value.offset))
        return [memory[a:b] for a, b in pairwise(bounds)]


class SlotSender:
    """The batch path's ``collate_fn``: what the dataset yields arrives collated; a worker's
    :class:`Bundle` (only workers bundle) moves into :attr:`slots` when set (the loader sets them before
    its workers fork)."""

    def __init__(self) -> None:
        self.slots: BatchSlots | None = None

    def __call__(self, item: Any) -> Any:
        if self.slots is None or not isinstance(item, Bundle):
            return item
        return self.slots.put(item)

    def __getstate__(self) -> dict[str, Any]:
        return {"slots": None}  # a copy in another process (spawn) sends through the pipe


def _movable(value: Any) -> bool:
    """Whether ``value`` goes into a slot: a numpy array, or a non-empty list of ``bytes``."""
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biufc"
    return type(value) is list and bool(value) and all(type(item) is bytes for item in value)


def _size(value: np.ndarray | list[bytes]) -> int:
    return value.nbytes if isinstance(value, np.ndarray) else sum(map(len, value))
