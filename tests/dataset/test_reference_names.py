"""mosaicml-streaming's names on StreamingDataset and Stream, as shardflow gives them (what needs no
reference venv: tests/compat/test_reference_names_dataset.py compares the values with the reference's)."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from shardflow.dataset import DatasetConfigError, Stream, StreamingDataset, default_cache_folder
from shardflow.dataset.cache import lock_path
from shardflow.dataset.errors import IndexNotFoundError, NoShardsError
from shardflow.dataset.registry import StreamRegistry, streams_registry
from shardflow.shuffle import ShuffleError


@dataclass
class TaggedStream(Stream):
    """A Stream subclass with a field of its own, as a registry user writes one."""

    tag: str = "none"


@pytest.fixture
def registered() -> object:
    streams_registry.register("tagged", func=TaggedStream)
    yield
    streams_registry._classes.pop("tagged", None)


def test_stream_name_picks_the_registered_class_and_config_reaches_it(
    registered: object, tokens_remote: Path, tmp_path: Path
) -> None:
    ds = StreamingDataset(
        remote=str(tokens_remote),
        local=str(tmp_path),
        stream_name="tagged",
        stream_config={"tag": "x", "choose": 10},
    )
    assert type(ds.streams[0]) is TaggedStream and ds.streams[0].tag == "x"
    assert ds.epoch_size == 10 and "tagged" in streams_registry


def test_registry_refuses_what_cannot_work(tokens_remote: Path, tmp_path: Path) -> None:
    with pytest.raises(
        DatasetConfigError, match=r"stream_name='nope' is not registered: use one of \['stream'"
    ):
        StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), stream_name="nope")
    with pytest.raises(DatasetConfigError, match="only Stream subclasses"):
        StreamRegistry().register("dict", func=dict)  # type: ignore[call-overload]
    with pytest.raises(DatasetConfigError, match=r"stream_config sets \['remote'\]"):
        StreamingDataset(local=str(tmp_path), stream_config={"remote": "elsewhere"})
    with pytest.raises(DatasetConfigError, match="does not fit Stream"):
        StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), stream_config={"colour": 1})
    with pytest.raises(DatasetConfigError, match="with streams=, build each Stream yourself"):
        StreamingDataset(streams=[Stream(local=str(tokens_remote))], stream_config={"choose": 1})


def test_weights_are_written_back_and_the_given_ones_kept(tokens_remote: Path, zstd_remote: Path) -> None:
    given = [Stream(local=str(tokens_remote), proportion=3), Stream(local=str(zstd_remote), proportion=1)]
    ds = StreamingDataset(streams=given, epoch_size=400)
    assert [s.proportion for s in given] == [3, 1] and given[0].choose is None  # the caller's stay as given
    resolved = [(s.proportion, s.repeat, s.choose) for s in ds.streams]
    assert [type(v) for v in resolved[0]] == [np.float64, np.float64, np.int64]
    assert [int(s.choose) for s in ds.streams] == [300, 100] and ds.streams[0].proportion == 0.75
    again = StreamingDataset(streams=ds.streams, epoch_size=400)  # resolved streams can be reused
    assert [(s.proportion, s.repeat, s.choose) for s in again.streams] == resolved
    assert Stream.validate_weights(ds.streams) == (True, False)
    assert Stream.validate_weights([Stream(local="x"), Stream(local="y")]) == (False, True)
    with pytest.raises(ShuffleError, match="stream 1 lacks a proportion"):
        Stream.validate_weights([Stream(local="x", proportion=1), Stream(local="y", repeat=2)])


def test_apply_default_fills_unset_options_in_place() -> None:
    stream = Stream(remote="s3://bucket/data", download_retry=5)
    stream.apply_default({"split": "train", "download_retry": 1, "download_timeout": 9, "keep_zip": True})
    assert (stream.split, stream.download_retry, stream.download_timeout, stream.keep_zip) == (
        "train",
        5,
        9,
        True,
    )
    assert stream.safe_keep_zip and not Stream(remote="s3://b/d", keep_zip=False).safe_keep_zip
    assert Stream(local="/data").safe_keep_zip  # read in place: nothing is pruned


def test_local_none_stays_unset_and_cache_folder_says_where(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHARDFLOW_CACHE_DIR", str(tmp_path))
    stream = Stream(remote="s3://bucket/data", split="val")
    assert stream.local is None
    assert stream.cache_folder == default_cache_folder("s3://bucket/data")
    assert stream.cache_folder.is_relative_to(tmp_path) and stream.local_root == stream.cache_folder / "val"


def test_stream_shard_methods(zstd_remote: Path, tmp_path: Path) -> None:
    stream = Stream(remote=str(zstd_remote), local=str(tmp_path))
    shards = stream.get_shards(None, False)
    assert isinstance(shards, list) and stream.get_index_size() == (tmp_path / "index.json").stat().st_size
    usage = np.zeros(len(shards), np.int64)
    stream.set_up_local(shards, usage)
    assert not usage.any()
    delta = stream.prepare_shard(shards[0])
    assert delta == sum(f.bytes for f in shards[0].raw_files)  # the zip is not kept
    assert stream.prepare_shard(shards[0]) == 0
    stream.set_up_local(shards, usage)
    assert usage.tolist() == [delta] + [0] * (len(shards) - 1)


def test_dataset_cache_methods(tokens_remote: Path, tmp_path: Path, held_lock) -> None:  # noqa: ANN001
    ds = StreamingDataset(remote=str(tokens_remote), local=str(tmp_path / "cache"))
    index = ds.streams[0].get_index_size()
    assert ds.cache_usage == index
    held_lock(lock_path(ds.streams[0].local_root, ds.shards[1].basename))
    ds.prepare_shard(1, blocking=False)  # another process is downloading it: left to it
    assert ds.cache_usage == index
    ds.prepare_shard(0)
    ds.prepare_shard(2)
    assert ds.cache_usage == index + ds.shards[0].raw_files[0].bytes + ds.shards[2].raw_files[0].bytes
    assert ds[0]["id"] == 0
    ds.evict_shard(0)  # open for ds[0]: unmapped first
    ds.evict_coldest_shard()
    assert ds.cache_usage == index and ds.cache_stats()["evictions"] == 2
    with pytest.raises(DatasetConfigError, match="nothing to evict"):
        ds.evict_coldest_shard()
    assert ds[5]["id"] == 5  # downloaded again


def test_evict_shard_never_deletes_a_local_only_dataset(tokens_remote: Path) -> None:
    ds = StreamingDataset(local=str(tokens_remote))
    before = ds.cache_usage
    ds.evict_shard(0)
    assert ds.cache_usage == before and ds[0]["id"] == 0


def test_next_epoch_and_on_exception(tokens_remote: Path) -> None:
    ds = StreamingDataset(local=str(tokens_remote))
    assert ds.next_epoch == 0
    list(ds)
    assert ds.next_epoch == 1
    ds.next_epoch = 4
    assert ds.next_epoch == 4 and ds.state_dict(0)["epoch"] == 4
    done: Future[None] = Future()
    done.set_result(None)
    ds.on_exception(done)
    failed: Future[None] = Future()
    failed.set_exception(OSError("disk gone"))
    with pytest.raises(OSError, match="disk gone"):
        ds.on_exception(failed)


def test_resample_streams_covers_the_epoch(tokens_remote: Path, zstd_remote: Path) -> None:
    streams = [Stream(local=str(tokens_remote), repeat=1.5), Stream(local=str(zstd_remote), choose=40)]
    ds = StreamingDataset(streams=streams, shuffle=True)
    units, ids = ds.resample_streams(0)
    assert units.dtype == ids.dtype == np.int64 and units.sum() == ids.size == ds.epoch_size == 1540
    assert np.bincount(ids[ids < 1000], minlength=1000).min() >= 1  # every sample of stream 0 at least once
    only, only_ids = ds.resample_streams(0, stream_id=1)
    assert only.sum() == 40 and ((only_ids >= 1000) & (only_ids < 2000)).all()


def test_errors_are_also_the_builtins_the_reference_raises(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexNotFoundError, match="index.json does not exist") as missing:
        StreamingDataset(remote=str(tmp_path / "empty"), local=str(tmp_path / "cache"))
    assert isinstance(missing.value, FileNotFoundError) and isinstance(missing.value, DatasetConfigError)
    with pytest.raises(NoShardsError, match="the stream has no remote") as bare:
        StreamingDataset(local=str(tmp_path / "empty"))
    (tmp_path / "empty" / "index.json").write_text('{"version": 2, "shards": []}')
    with pytest.raises(NoShardsError, match="lists no shards") as none:
        StreamingDataset(local=str(tmp_path / "empty"))
    assert all(isinstance(e.value, RuntimeError) for e in (bare, none))
