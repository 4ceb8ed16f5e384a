"""StreamingDataLoader(worker_kind="thread"): worker processes' batches, from threads sharing one pool."""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch

from shardflow.dataset import Stream, StreamingDataLoader, StreamingDataset
from shardflow.format import MDSWriter

from .test_resume import take_ids


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two streams of ``{id, tokens}``: ids 0-599 and 10,000-10,399, in small shards."""
    base = tmp_path_factory.mktemp("threads")
    for name, count, offset in (("a", 600, 0), ("b", 400, 10_000)):
        columns = {"id": "int", "tokens": "ndarray:int64:4", "text": "str"}
        with MDSWriter(out=str(base / name), columns=columns, size_limit=2048) as writer:
            for i in range(offset, offset + count):
                writer.write({"id": i, "tokens": torch.arange(i, i + 4).numpy(), "text": f"t{i}"})
    return {"a": base / "a", "b": base / "b"}


def _dataset(mixed: dict[str, Path], local: Path, **kwargs: Any) -> StreamingDataset:
    streams = [
        Stream(remote=str(mixed["a"]), local=str(local / "a"), proportion=0.7),
        Stream(remote=str(mixed["b"]), local=str(local / "b"), proportion=0.3),
    ]
    return StreamingDataset(streams=streams, shuffle=True, shuffle_seed=7, epoch_size=900, **kwargs)


def _loader(
    mixed: dict[str, Path], local: Path, kind: str, workers: int, **kwargs: Any
) -> StreamingDataLoader:
    return StreamingDataLoader(
        _dataset(mixed, local), batch_size=16, num_workers=workers, worker_kind=kind, **kwargs
    )


def _same_batches(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.keys() == b.keys()
        assert torch.equal(a["id"], b["id"]) and torch.equal(a["tokens"], b["tokens"])
        assert a["text"] == b["text"]


def _loader_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("shardflow-loader")]


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_threads_yield_the_batches_of_as_many_processes(
    mixed: dict[str, Path], tmp_path: Path, workers: int
) -> None:
    processes = list(_loader(mixed, tmp_path / "p", "process", workers))
    threads = _loader(mixed, tmp_path / "t", "thread", workers)
    _same_batches(list(threads), processes)
    assert threads.dataset.open_shards() == [], "every iteration let go of its shards"
    assert not _loader_threads()


def test_per_sample_path_with_a_collate_fn_matches_too(mixed: dict[str, Path], tmp_path: Path) -> None:
    def collate(samples: list[dict[str, Any]]) -> dict[str, list[int]]:
        return {"ids": [sample["id"] for sample in samples]}

    kwargs = {"collate_fn": collate, "drop_last": True}
    processes = list(_loader(mixed, tmp_path / "p", "process", 2, **kwargs))
    threads = list(_loader(mixed, tmp_path / "t", "thread", 2, **kwargs))
    assert threads == processes and all(len(batch["ids"]) == 16 for batch in threads)


class _Decoding(StreamingDataset):
    """A subclass with its own get_item (as an image pipeline has), noting which thread read each sample."""

    readers: dict[int, str] = {}

    def get_item(self, sample_id: int) -> Any:
        sample = super().get_item(sample_id)
        time.sleep(0.002)  # a decode that lets go of the GIL
        _Decoding.readers[int(sample["id"])] = threading.current_thread().name
        return {"id": sample["id"], "sum": int(sample["tokens"].sum())}


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_a_batch_of_own_get_item_samples_is_read_by_every_thread(
    mixed: dict[str, Path], tmp_path: Path, workers: int
) -> None:
    def loader(kind: str) -> StreamingDataLoader:
        streams = [Stream(remote=str(mixed["a"]), local=str(tmp_path / kind)), Stream(remote=str(mixed["b"]))]
        dataset = _Decoding(streams=streams, shuffle=True, shuffle_seed=3, epoch_size=300)
        return StreamingDataLoader(dataset, batch_size=16, num_workers=workers, worker_kind=kind)

    processes = list(loader("process"))
    _Decoding.readers.clear()
    threads = list(loader("thread"))
    assert len(threads) == len(processes)
    for a, b in zip(threads, processes, strict=True):
        assert torch.equal(a["id"], b["id"]) and torch.equal(a["sum"], b["sum"])
    first_batch = {_Decoding.readers[i] for i in threads[0]["id"].tolist()}
    assert len(first_batch) == workers, "the trainer's first batch is spread over all the threads"
    assert not _loader_threads()


@pytest.mark.parametrize(("first", "then"), [("process", "thread"), ("thread", "process")])
def test_a_state_saved_under_one_kind_resumes_under_the_other(
    mixed: dict[str, Path], tmp_path: Path, first: str, then: str
) -> None:
    whole = take_ids(_loader(mixed, tmp_path / "whole", "process", 2))
    before = _loader(mixed, tmp_path / "before", first, 2)
    head = take_ids(before, batches=7)
    state = before.state_dict()
    after = _loader(mixed, tmp_path / "after", then, 4)
    after.load_state_dict(state)
    assert head == whole[: len(head)]
    assert take_ids(after) == whole[len(head) :]


def test_next_iterations_run_the_next_epochs(mixed: dict[str, Path], tmp_path: Path) -> None:
    threads = _loader(mixed, tmp_path / "t", "thread", 2)
    processes = _loader(mixed, tmp_path / "p", "process", 2)
    for _ in range(2):
        assert take_ids(threads) == take_ids(processes)
    assert threads.state_dict() == processes.state_dict()


class _Failing(StreamingDataset):
    """Fails on sample 123 (ids come from its own get_item, so reads go sample by sample)."""

    def get_item(self, sample_id: int) -> Any:
        if sample_id == 123:
            raise KeyError(f"cannot read sample {sample_id}")
        return super().get_item(sample_id)


def test_a_worker_error_reaches_the_trainer_with_its_traceback(tmp_path: Path, tokens_remote: Path) -> None:
    dataset = _Failing(remote=str(tokens_remote), local=str(tmp_path / "cache"))
    loader = StreamingDataLoader(dataset, batch_size=8, num_workers=2, worker_kind="thread")
    with pytest.raises(KeyError, match="cannot read sample 123") as caught:
        list(loader)
    frames = traceback.extract_tb(caught.value.__traceback__)
    assert any(frame.name == "get_item" for frame in frames), "the worker's frames are kept"
    assert not _loader_threads()


def test_break_and_a_second_iter_leave_no_thread_behind(mixed: dict[str, Path], tmp_path: Path) -> None:
    loader = _loader(mixed, tmp_path, "thread", 4, prefetch_factor=1)
    for k, _ in enumerate(loader):
        if k == 3:
            break
    assert not _loader_threads()
    first = iter(loader)
    next(first)
    second = iter(loader)
    next(second)
    del first, second
    assert not _loader_threads()
    assert loader.dataset.open_shards() == []


def test_thread_kind_needs_a_streaming_dataset_read_in_batches(tokens_remote: Path, tmp_path: Path) -> None:
    dataset = StreamingDataset(remote=str(tokens_remote), local=str(tmp_path))
    with pytest.raises(ValueError, match="worker_kind='fibre' is unknown"):
        StreamingDataLoader(dataset, batch_size=4, worker_kind="fibre")
    with pytest.raises(ValueError, match="worker_kind='thread'"):
        StreamingDataLoader(list(range(10)), batch_size=4, num_workers=2, worker_kind="thread")
    with pytest.raises(ValueError, match="worker_kind='thread'"):
        StreamingDataLoader(dataset, batch_size=None, num_workers=2, worker_kind="thread")
