"""The loader reports the user's arguments as a plain DataLoader does, whatever its internal path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from torch.utils.data import BatchSampler, DataLoader, default_collate

from shardflow.dataset import StreamingDataLoader, StreamingDataset

ATTRIBUTES = (
    "batch_size",
    "drop_last",
    "collate_fn",
    "num_workers",
    "pin_memory",
    "timeout",
    "worker_init_fn",
    "prefetch_factor",
    "persistent_workers",
    "generator",
    "in_order",
    "multiprocessing_context",
    "pin_memory_device",
)


def _dataset(remote: Path, local: Path, batch_size: int) -> StreamingDataset:
    return StreamingDataset(remote=str(remote), local=str(local), shuffle=True, batch_size=batch_size)


def _reported(loader: DataLoader) -> dict[str, Any]:
    """What frameworks read of a loader, with the samplers by type and batch sampler by its arguments."""
    found = {name: getattr(loader, name) for name in ATTRIBUTES}
    found["sampler"] = type(loader.sampler)
    sampler = loader.batch_sampler
    found["batch_sampler"] = (
        (type(sampler), type(sampler.sampler), sampler.batch_size, sampler.drop_last)
        if isinstance(sampler, BatchSampler)
        else sampler
    )
    found["len"] = len(loader)
    return found


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 64, "drop_last": True},
        {"batch_size": 10},
        {
            "batch_size": 7,
            "num_workers": 2,
            "drop_last": True,
            "prefetch_factor": 3,
            "persistent_workers": True,
        },
        {"batch_size": 16, "pin_memory": True, "num_workers": 1, "timeout": 30.0},
    ],
)
def test_attributes_equal_a_plain_dataloaders(tokens_remote: Path, tmp_path: Path, kwargs: dict) -> None:
    ds = _dataset(tokens_remote, tmp_path / "a", kwargs["batch_size"])
    loader = StreamingDataLoader(ds, **kwargs)
    assert loader._batch_reads is not None, "the batch path should be on by default"
    plain = DataLoader(_dataset(tokens_remote, tmp_path / "b", kwargs["batch_size"]), **kwargs)
    assert _reported(loader) == _reported(plain)
    assert loader.collate_fn is default_collate
    assert loader.batch_size == kwargs["batch_size"]
    assert loader.drop_last is kwargs.get("drop_last", False)


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_and_attributes_agree(tokens_remote: Path, tmp_path: Path, workers: int) -> None:
    """Iterating leaves the attributes as given; the batches have batch_size samples and len() of them."""
    ds = _dataset(tokens_remote, tmp_path, 64)
    loader = StreamingDataLoader(ds, batch_size=64, drop_last=True, num_workers=workers)
    before = _reported(loader)
    sizes = [len(batch["id"]) for batch in loader]
    assert _reported(loader) == before
    assert set(sizes) == {64}
    assert len(sizes) <= len(loader) == ds.num_samples // 64


def test_per_sample_path_reports_the_same(tokens_remote: Path, tmp_path: Path) -> None:
    fast = StreamingDataLoader(_dataset(tokens_remote, tmp_path / "a", 32), batch_size=32, drop_last=True)
    slow = StreamingDataLoader(
        _dataset(tokens_remote, tmp_path / "b", 32), batch_size=32, drop_last=True, batch_reads=False
    )
    assert fast._batch_reads is not None and slow._batch_reads is None
    assert _reported(fast) == _reported(slow)


def test_attributes_stay_read_only_as_in_torch(tokens_remote: Path, tmp_path: Path) -> None:
    loader = StreamingDataLoader(_dataset(tokens_remote, tmp_path, 8), batch_size=8)
    with pytest.raises(ValueError, match="batch_size attribute should not be set"):
        loader.batch_size = 4


def test_a_copy_of_the_loader_iterates_the_same(tokens_remote: Path, tmp_path: Path) -> None:
    """Frameworks that deep-copy a loader get one that still reads whole batches and reports the same."""
    loader = StreamingDataLoader(_dataset(tokens_remote, tmp_path, 50), batch_size=50)
    twin = copy.deepcopy(loader)
    assert _reported(twin) == _reported(loader)
    assert [b["id"].tolist() for b in twin] == [b["id"].tolist() for b in loader]
