"""Bad input is refused at construction with an error that names the problem, never a hang later."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from shardflow.dataset import DatasetConfigError, Stream, StreamingDataset, World
from shardflow.dataset._units import format_bytes, parse_bytes
from shardflow.format import IndexFormatError, ShardMissingError
from shardflow.shuffle import ShuffleError

from .conftest import write_tokens


def test_missing_local_folder_without_remote(tmp_path: Path) -> None:
    with pytest.raises(DatasetConfigError, match=r"index\.json does not exist.*local="):
        StreamingDataset(local=str(tmp_path / "nowhere"))


def test_remote_without_index(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetConfigError, match=r"empty/index\.json does not exist"):
        StreamingDataset(remote=str(tmp_path / "empty"), local=str(tmp_path / "cache"))


def test_wrong_split(tokens_remote: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetConfigError, match="split='val'"):
        StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), split="val")


def test_corrupt_index(tokens_remote: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    shutil.copytree(tokens_remote, remote)
    (remote / "index.json").write_text('{"version": 2, "shards": [{"format": "mds"}]}')
    with pytest.raises(IndexFormatError, match="index.json"):
        StreamingDataset(remote=str(remote), local=str(tmp_path / "cache"))


def test_shard_missing_on_the_remote_is_named_when_read(tokens_remote: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    shutil.copytree(tokens_remote, remote)
    (remote / "shard.00001.mds").unlink()
    ds = StreamingDataset(remote=str(remote), local=str(tmp_path / "cache"))
    assert ds[0]["id"] == 0
    with pytest.raises(ShardMissingError, match="shard.00001.mds"):
        list(ds)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shuffle_algo": "py3x", "shuffle": True}, "shuffle_algo='py3x'"),
        ({"partition_algo": "zigzag"}, "partition_algo='zigzag'"),
        ({"sampling_method": "odd"}, "sampling_method='odd'"),
        ({"batching_method": "odd"}, "batching_method='odd'"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"epoch_size": "lots"}, "epoch_size='lots'"),
        ({"predownload": -1}, "predownload=-1"),
    ],
)
def test_bad_arguments(tokens_remote: Path, tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises((DatasetConfigError, ShuffleError), match=match):
        StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), **kwargs)


def test_streams_and_remote_together(tokens_remote: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetConfigError, match="either streams or remote"):
        StreamingDataset(streams=[Stream(local=str(tokens_remote))], remote=str(tokens_remote))


def test_stream_with_two_weights() -> None:
    with pytest.raises(DatasetConfigError, match="proportion and repeat"):
        Stream(local="x", proportion=0.5, repeat=2)


def test_streams_mixing_proportions_with_repeats(
    tokens_remote: Path, zstd_remote: Path, tmp_path: Path
) -> None:
    streams = [
        Stream(remote=str(tokens_remote), local=str(tmp_path / "a"), proportion=0.5),
        Stream(remote=str(zstd_remote), local=str(tmp_path / "b"), repeat=2),
    ]
    with pytest.raises(ShuffleError, match="proportion"):
        StreamingDataset(streams=streams)


def test_world_that_does_not_hold_together() -> None:
    with pytest.raises(DatasetConfigError, match="multiple of local_world_size"):
        World(rank=0, world_size=3, local_rank=0, local_world_size=2)
    with pytest.raises(DatasetConfigError, match="local_rank must be 1"):
        World(rank=3, world_size=4, local_rank=0, local_world_size=2)


def test_environment_variables_that_are_not_numbers(
    tokens_remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(DatasetConfigError, match="WORLD_SIZE=two"):
        StreamingDataset(remote=str(tokens_remote), local=str(tmp_path))


def test_world_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(name, value)
    world = World.detect()
    assert (world.rank, world.world_size, world.local_rank, world.local_world_size) == (5, 8, 1, 4)
    assert (world.num_nodes, world.node) == (2, 1)
    assert world.replicate(2) == World(2, 4, 0, 2)
    with pytest.raises(DatasetConfigError, match="replication=3"):
        world.replicate(3)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (123, 123),
        ("10gb", 10 * 1024**3),
        ("1.5 MB", 1536 * 1024),
        ("512kb", 512 * 1024),
        ("77b", 77),
        ("9", 9),
        ("1,234,567 bytes", 1234567),
        ("1,234,567", 1234567),
    ],
)
def test_cache_limit_parses_as_the_reference(given, expected) -> None:
    assert parse_bytes("cache_limit", given) == expected


def test_cache_limit_is_kept_by_the_dataset(tokens_remote: Path, tmp_path: Path) -> None:
    ds = StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), cache_limit="1.5 MB")
    assert ds.cache_limit == 1536 * 1024


def test_the_smallest_workable_cache_limit_is_accepted_as_printed(tmp_path: Path) -> None:
    remote = write_tokens(tmp_path / "remote", 300, size_limit=7000)  # shards whose size rounds down in kb
    with pytest.raises(DatasetConfigError, match=r"smallest workable limit is ([\d,]+ bytes) \((\S+)\)") as e:
        StreamingDataset(remote=str(remote), local=str(tmp_path / "cache"), cache_limit="1kb")
    message = str(e.value)
    printed = message.split("smallest workable limit is ")[1].split(" (")[0]  # "13,948 bytes"
    human = message.split(printed + " (")[1].split(")")[0]  # "13.63kb": rounded up
    smallest = int(printed.split()[0].replace(",", ""))
    assert parse_bytes("cache_limit", f"{smallest / 1024:.4g}kb") < smallest  # rounding to nearest: too small
    for given in (smallest, printed, printed.split()[0], human):
        StreamingDataset(remote=str(remote), local=str(tmp_path / "cache"), cache_limit=given)


def test_sizes_rounded_up_for_a_person_parse_back_to_no_less() -> None:
    rng = np.random.default_rng(5)
    for count in [1023, 1024, 1025, 12_300, 1_048_575, *rng.integers(1, 1 << 50, 2000).tolist()]:
        text = format_bytes(count, round_up=True)
        assert count <= parse_bytes("cache_limit", text) <= count * 1.001, (count, text)


@pytest.mark.parametrize("given", ["lots", "10 parsecs", "5k", -1, "1,5gb", "12,34"])
def test_cache_limit_that_is_not_a_size(tokens_remote: Path, tmp_path: Path, given) -> None:
    with pytest.raises(DatasetConfigError, match="cache_limit="):
        StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), cache_limit=given)
