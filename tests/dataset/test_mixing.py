"""Stream mixing: proportion, repeat, choose and epoch_size give exact per-stream counts every epoch."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from shardflow.dataset import Stream, StreamingDataLoader, StreamingDataset
from shardflow.format import MDSWriter

SIZES = {"a": 600, "b": 400}
OFFSET = {"a": 0, "b": 10_000}


@pytest.fixture(scope="module")
def remotes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("mix")
    for name, count in SIZES.items():
        with MDSWriter(out=str(base / name), columns={"id": "int"}, size_limit=1024) as writer:
            for i in range(count):
                writer.write({"id": OFFSET[name] + i})
    return {name: base / name for name in SIZES}


def _epoch(remotes: dict[str, Path], tmp_path: Path, weights: dict[str, dict], **kwargs) -> Counter:
    streams = [
        Stream(remote=str(remotes[name]), local=str(tmp_path / name), **weights.get(name, {}))
        for name in SIZES
    ]
    ds = StreamingDataset(streams=streams, shuffle=True, batch_size=8, **kwargs)
    ids = [i for batch in StreamingDataLoader(ds, batch_size=8, num_workers=2) for i in batch["id"].tolist()]
    assert len(ids) == ds.epoch_size
    return Counter(ids)


def _per_stream(counts: Counter) -> dict[str, int]:
    return {
        "a": sum(c for i, c in counts.items() if i < 10_000),
        "b": sum(c for i, c in counts.items() if i >= 10_000),
    }


def test_repeat(remotes: dict[str, Path], tmp_path: Path) -> None:
    counts = _epoch(remotes, tmp_path, {"a": {"repeat": 2}, "b": {"repeat": 0.5}})
    assert _per_stream(counts) == {"a": 1200, "b": 200}
    assert all(counts[i] == 2 for i in range(600))
    assert all(counts[i] == 1 for i in counts if i >= 10_000)


def test_choose(remotes: dict[str, Path], tmp_path: Path) -> None:
    counts = _epoch(remotes, tmp_path, {"a": {"choose": 100}, "b": {"choose": 1000}})
    assert _per_stream(counts) == {"a": 100, "b": 1000}
    assert (
        max(counts[i] for i in range(10_000, 10_400)) == 3
        and min(counts[i] for i in range(10_000, 10_400)) == 2
    )


def test_proportion_with_epoch_size(remotes: dict[str, Path], tmp_path: Path) -> None:
    counts = _epoch(remotes, tmp_path, {"a": {"proportion": 3}, "b": {"proportion": 1}}, epoch_size=800)
    assert _per_stream(counts) == {"a": 600, "b": 200}


def test_epoch_size_alone_draws_in_proportion_to_size(remotes: dict[str, Path], tmp_path: Path) -> None:
    counts = _epoch(remotes, tmp_path, {}, epoch_size="0.5k")
    assert _per_stream(counts) == {"a": 300, "b": 200}


def test_partial_repeats_draw_other_samples_each_epoch(remotes: dict[str, Path], tmp_path: Path) -> None:
    streams = [
        Stream(remote=str(remotes["a"]), local=str(tmp_path / "a"), choose=100),
        Stream(remote=str(remotes["b"]), local=str(tmp_path / "b"), choose=100),
    ]
    ds = StreamingDataset(streams=streams, shuffle=True)
    first, second = Counter(s["id"] for s in ds), Counter(s["id"] for s in ds)
    assert _per_stream(first) == _per_stream(second) == {"a": 100, "b": 100}
    assert set(first) != set(second)


def _batches(remotes: dict[str, Path], tmp_path: Path, method: str, **weights: dict) -> list[list[int]]:
    streams = [
        Stream(remote=str(remotes[name]), local=str(tmp_path / name), **weights.get(name, {}))
        for name in SIZES
    ]
    ds = StreamingDataset(streams=streams, shuffle=True, batch_size=20, batching_method=method)
    return [batch["id"].tolist() for batch in StreamingDataLoader(ds, batch_size=20, num_workers=2)]


@pytest.mark.parametrize("method", ["per_stream", "device_per_stream"])
def test_per_stream_batches_come_from_one_stream(
    remotes: dict[str, Path], tmp_path: Path, method: str
) -> None:
    batches = _batches(remotes, tmp_path, method)
    assert all(len(batch) == 20 for batch in batches)
    sources = [{i >= 10_000 for i in batch} for batch in batches]
    assert all(len(source) == 1 for source in sources)
    from_b = [source == {True} for source in sources]
    assert from_b.count(False) == 30 and from_b.count(True) == 20
    assert from_b != sorted(from_b), "the streams' batches are interleaved by a seeded shuffle"


def test_stratified_batches_hold_each_streams_share(remotes: dict[str, Path], tmp_path: Path) -> None:
    batches = _batches(remotes, tmp_path, "stratified")
    assert len(batches) == 50
    for batch in batches:
        assert (sum(i < 10_000 for i in batch), sum(i >= 10_000 for i in batch)) == (12, 8)
    assert sorted(i for b in batches for i in b) == sorted([*range(600), *range(10_000, 10_400)])


def test_batching_methods_need_a_batch_size(remotes: dict[str, Path], tmp_path: Path) -> None:
    from shardflow.dataset import DatasetConfigError

    with pytest.raises(DatasetConfigError, match="needs batch_size"):
        StreamingDataset(remote=str(remotes["a"]), local=str(tmp_path), batching_method="per_stream")
