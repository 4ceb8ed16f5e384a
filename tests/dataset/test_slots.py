"""Bundles of batches through shared-memory slots: what moves, what stays, a slot reused only once taken."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from shardflow.dataset import StreamingDataLoader, StreamingDataset
from shardflow.dataset._bundles import Bundle
from shardflow.dataset._slots import SLOT_BYTES, BatchSlots, InSlot, SlotSender


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


def _bundle(*seeds: int) -> Bundle:
    return Bundle(1, [_batch(seed) for seed in seeds])


def _same_bundle(a: Bundle, b: Bundle) -> bool:
    return a.worker == b.worker and len(a.batches) == len(b.batches) and all(map(_same, a.batches, b.batches))


def test_arrays_and_bytes_move_and_come_back_equal() -> None:
    slots = BatchSlots(2, 2, multiprocessing.get_context("fork"))
    bundle = _bundle(0, 1)
    sent = slots.put(bundle)
    for batch, original in zip(sent.batches, bundle.batches, strict=True):
        assert all(isinstance(batch[name], InSlot) for name in ("label", "pixels", "image"))
        assert batch["caption"] is original["caption"], "lists of str go through the pipe"
    assert len({(v.worker, v.slot) for b in sent.batches for v in b.values() if isinstance(v, InSlot)}) == 1
    assert len(pickle.dumps(sent)) < 2000
    got = slots.take(pickle.loads(pickle.dumps(sent)))
    assert _same_bundle(got, bundle)
    assert got.batches[0]["pixels"].flags.owndata and got.batches[0]["pixels"].flags.writeable


def test_a_worker_without_a_free_slot_sends_the_bundle_itself() -> None:
    slots = BatchSlots(2, 2, multiprocessing.get_context("fork"))
    first, second = slots.put(_bundle(1)), slots.put(_bundle(2, 3))
    third = _bundle(4)
    assert slots.put(third) is third
    assert _same_bundle(slots.take(first), _bundle(1))
    fourth = slots.put(_bundle(5))  # reuses the first slot, freed by take
    assert isinstance(fourth.batches[0]["label"], InSlot)
    assert fourth.batches[0]["label"].slot == first.batches[0]["label"].slot
    assert _same_bundle(slots.take(second), _bundle(2, 3)) and _same_bundle(slots.take(fourth), _bundle(5))


def test_what_does_not_move() -> None:
    slots = BatchSlots(2, 1, multiprocessing.get_context("fork"))
    big = Bundle(
        1, [{"x": np.zeros(SLOT_BYTES // 2 + 1, np.uint8)}, {"x": np.zeros(SLOT_BYTES // 2, np.uint8)}]
    )
    assert slots.put(big) is big, "a bundle moves whole or not at all"
    for batch in ({"caption": ["a"]}, {"image": []}, {"t": torch.zeros(3)}, [np.zeros(3)]):
        bundle = Bundle(1, [batch])
        assert slots.put(bundle) is bundle


def test_outside_a_worker_and_across_pickling_nothing_moves() -> None:
    """Only workers bundle their batches: a batch read in the trainer (num_workers=0) passes as it is."""
    slots = BatchSlots(1, 1, multiprocessing.get_context("fork"))
    sender = SlotSender()
    sender.slots = slots
    batch = _batch(5)
    assert sender(batch) is batch
    assert pickle.loads(pickle.dumps(sender)).slots is None


@pytest.mark.parametrize("persistent", [False, True])
def test_loader_batches_cross_in_slots_and_equal_the_pipe(
    tokens_remote: Path, tmp_path: Path, persistent: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = {"slots": 0, "pipe": 0}
    take = BatchSlots.take

    def counting_take(self: BatchSlots, bundle: Bundle) -> Bundle:
        moved = any(isinstance(v, InSlot) for batch in bundle.batches for v in batch.values())
        counts["slots" if moved else "pipe"] += 1
        return take(self, bundle)

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
