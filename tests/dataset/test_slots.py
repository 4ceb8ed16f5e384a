"""Batches through shared-memory slots: what moves, what stays, and a slot is reused only once taken."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from shardflow.dataset import StreamingDataLoader, StreamingDataset, _slots
from shardflow.dataset._slots import SLOT_BYTES, BatchSlots, InSlot, SlotSender


@pytest.fixture
def in_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """put() runs as worker 1 of 2."""
    monkeypatch.setattr(_slots, "get_worker_info", lambda: SimpleNamespace(id=1, num_workers=2))


def _batch(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "label": rng.integers(0, 10, 5),
        "pixels": rng.random((5, 2, 3)).astype(np.float32),
        "image": [bytes(rng.integers(0, 256, n, dtype=np.uint8)) for n in (3, 0, 7, 1, 4)],
        "caption": ["a", "b", "c", "d", "e"],
    }


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype
        if isinstance(b[k], np.ndarray)
        else a[k] == b[k]
        for k in b
    )


def test_arrays_and_bytes_move_and_come_back_equal(in_worker: None) -> None:
    slots = BatchSlots(2, 2, multiprocessing.get_context("fork"))
    batch = _batch(0)
    sent = slots.put(batch)
    assert all(isinstance(sent[name], InSlot) for name in ("label", "pixels", "image"))
    assert sent["caption"] is batch["caption"], "lists of str go through the pipe"
    assert len(pickle.dumps(sent)) < 1000
    got = slots.take(pickle.loads(pickle.dumps(sent)))
    assert _same(got, batch)
    assert got["pixels"].flags.owndata and got["pixels"].flags.writeable


def test_a_worker_without_a_free_slot_sends_the_batch_itself(in_worker: None) -> None:
    slots = BatchSlots(2, 2, multiprocessing.get_context("fork"))
    first, second = slots.put(_batch(1)), slots.put(_batch(2))
    third = _batch(3)
    assert slots.put(third) is third
    assert _same(slots.take(first), _batch(1))
    fourth = slots.put(_batch(4))  # reuses the first slot, freed by take
    assert isinstance(fourth["label"], InSlot) and fourth["label"].slot == first["label"].slot
    assert _same(slots.take(second), _batch(2)) and _same(slots.take(fourth), _batch(4))


def test_what_does_not_move(in_worker: None) -> None:
    slots = BatchSlots(2, 1, multiprocessing.get_context("fork"))
    big = {"x": np.zeros(SLOT_BYTES + 1, np.uint8)}
    assert slots.put(big) is big
    for batch in ({"caption": ["a"]}, {"image": []}, {"t": torch.zeros(3)}, [np.zeros(3)]):
        assert slots.put(batch) is batch


def test_outside_a_worker_and_across_pickling_nothing_moves() -> None:
    slots = BatchSlots(1, 1, multiprocessing.get_context("fork"))
    batch = _batch(5)
    assert slots.put(batch) is batch
    sender = SlotSender()
    sender.slots = slots
    assert pickle.loads(pickle.dumps(sender)).slots is None


@pytest.mark.parametrize("persistent", [False, True])
def test_loader_batches_cross_in_slots_and_equal_the_pipe(
    tokens_remote: Path, tmp_path: Path, persistent: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = {"slots": 0, "pipe": 0}
    take = BatchSlots.take

    def counting_take(self: BatchSlots, batch: dict) -> dict:
        counts["slots" if any(isinstance(v, InSlot) for v in batch.values()) else "pipe"] += 1
        return take(self, batch)

    monkeypatch.setattr(BatchSlots, "take", counting_take)
    ds = StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), shuffle=True, batch_size=32)
    loader = StreamingDataLoader(ds, batch_size=32, num_workers=2, persistent_workers=persistent)
    epochs = [list(loader) for _ in range(2)]
    assert counts["slots"] > 0
    ds0 = StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), shuffle=True, batch_size=32)
    plain = StreamingDataLoader(ds0, batch_size=32, num_workers=0)
    for got, expected in zip(epochs, [list(plain), list(plain)], strict=True):
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a["id"], b["id"]) and torch.equal(a["tokens"], b["tokens"])
