"""Iteration: every sample exactly once, the same order for any worker count, batch and sample paths equal."""

from __future__ import annotations

import resource
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from shardflow.dataset import Stream, StreamingDataLoader, StreamingDataset
from shardflow.dataset._collate import ByteSpans, read_batch, read_spans
from shardflow.format import ShardReader

from .conftest import token_sample


def _ids(loader: StreamingDataLoader) -> list[int]:
    ids: list[int] = []
    for batch in loader:
        ids.extend(batch["id"].tolist())
    return ids


def _dataset(remote: Path, local: Path, **kwargs) -> StreamingDataset:
    return StreamingDataset(remote=str(remote), local=str(local), **kwargs)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("workers", [0, 1, 2, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_sample_once(
    tokens_remote: Path, tmp_path: Path, shuffle: bool, workers: int, drop_last: bool
) -> None:
    batch = 16
    ds = _dataset(tokens_remote, tmp_path, shuffle=shuffle, batch_size=batch)
    ids = _ids(StreamingDataLoader(ds, batch_size=batch, num_workers=workers, drop_last=drop_last))
    counts = Counter(ids)
    assert max(counts.values()) == 1, "a sample came twice in one epoch on one rank"
    missing = set(range(ds.num_samples)) - set(ids)
    if not drop_last:
        assert not missing
    else:
        # Each worker's last batch may be partial (its ids are padded with -1 to whole batches); drop_last
        # drops it, and only it.
        assert len(missing) < batch * max(workers, 1)
        assert len(ids) % batch == 0


def test_order_is_the_same_for_any_worker_count(tokens_remote: Path, tmp_path: Path) -> None:
    orders = []
    for workers in (0, 1, 2, 4):
        ds = _dataset(tokens_remote, tmp_path, shuffle=True, batch_size=8, shuffle_seed=7)
        orders.append(_ids(StreamingDataLoader(ds, batch_size=8, num_workers=workers)))
    assert all(order == orders[0] for order in orders[1:])
    assert orders[0] != sorted(orders[0])


def test_batch_path_equals_per_sample_path(zstd_remote: Path, tmp_path: Path) -> None:
    def batches(batch_reads: bool) -> list[dict]:
        ds = _dataset(zstd_remote, tmp_path / str(batch_reads), shuffle=True, batch_size=32)
        return list(StreamingDataLoader(ds, batch_size=32, num_workers=2, batch_reads=batch_reads))

    fast, slow = batches(True), batches(False)
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow, strict=True):
        assert a.keys() == b.keys()
        for name in ("id", "tokens"):
            assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name])
        assert a["text"] == b["text"]


def test_samples_are_correct_and_epochs_differ(zstd_remote: Path, tmp_path: Path) -> None:
    ds = _dataset(zstd_remote, tmp_path, shuffle=True)
    first = list(ds)
    for sample in first[:50]:
        expected = token_sample(sample["id"])
        assert np.array_equal(sample["tokens"], expected["tokens"]) and sample["text"] == expected["text"]
    second = [s["id"] for s in ds]
    assert sorted(second) == list(range(1000))
    assert second != [s["id"] for s in first], "the second epoch must be shuffled differently"


def test_random_access_before_any_download(zstd_remote: Path, tmp_path: Path) -> None:
    ds = _dataset(zstd_remote, tmp_path)
    assert not any(p.suffix == ".mds" for p in tmp_path.iterdir())
    assert ds[777]["id"] == 777 and ds[-1]["id"] == 999
    assert [s["id"] for s in ds[3:6]] == [3, 4, 5] and [s["id"] for s in ds[[9, 1]]] == [9, 1]
    with pytest.raises(IndexError):
        ds[1000]
    assert not list(tmp_path.glob("*.zstd")), (
        "keep_zip=False removes the compressed shard after decompressing"
    )


def test_keep_zip_keeps_the_compressed_shards(zstd_remote: Path, tmp_path: Path) -> None:
    ds = _dataset(zstd_remote, tmp_path, keep_zip=True, validate_hash="sha1")
    ds[0]
    assert list(tmp_path.glob("*.mds.zstd")) and list(tmp_path.glob("*.mds"))


def test_local_none_uses_a_cache_folder_that_a_second_run_reuses(
    tokens_remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARDFLOW_CACHE_DIR", str(tmp_path))
    first = StreamingDataset(remote=str(tokens_remote))
    assert first[5]["id"] == 5
    folder = first.streams[0].local_root
    assert folder.is_relative_to(tmp_path) and (folder / "shard.00000.mds").is_file()
    second = StreamingDataset(remote=str(tokens_remote))
    assert second.streams[0].local_root == folder and second[5]["id"] == 5


def test_remote_none_reads_local_in_place(tokens_remote: Path) -> None:
    ds = StreamingDataset(local=str(tokens_remote))
    assert [s["id"] for s in ds] == list(range(1000))


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_text_datasets(text_remotes: dict[str, Path], tmp_path: Path, kind: str) -> None:
    ds = _dataset(text_remotes[kind], tmp_path, shuffle=True, batch_size=10)
    batches = list(StreamingDataLoader(ds, batch_size=10, num_workers=2))
    pairs = {(i, t) for b in batches for i, t in zip(b["id"].tolist(), b["text"], strict=True)}
    assert pairs == {(i, f"line {i}") for i in range(300)}


class Doubled(StreamingDataset):
    """A subclass with a transform, as users write them."""

    def __getitem__(self, at):  # type: ignore[override]
        sample = super().__getitem__(at)
        return {"id": sample["id"], "twice": sample["id"] * 2}


def test_subclass_transform_runs_in_workers(tokens_remote: Path, tmp_path: Path) -> None:
    ds = Doubled(remote=str(tokens_remote), local=str(tmp_path), shuffle=True, batch_size=4)
    batches = list(StreamingDataLoader(ds, batch_size=4, num_workers=2))
    ids = torch.cat([b["id"] for b in batches])
    assert torch.equal(torch.cat([b["twice"] for b in batches]), ids * 2)
    assert sorted(ids.tolist()) == list(range(1000))


def test_early_break_and_second_iter_do_not_hang(tokens_remote: Path, tmp_path: Path) -> None:
    ds = _dataset(tokens_remote, tmp_path, shuffle=True)
    for i, _ in enumerate(ds):
        if i == 10:
            break
    assert len([s for s in ds]) == 1000
    loader = StreamingDataLoader(ds, batch_size=8, num_workers=2)
    for i, _ in enumerate(loader):
        if i == 2:
            break
    assert len(_ids(loader)) == 1000


def test_streams_mix_with_split(tokens_remote: Path, zstd_remote: Path, tmp_path: Path) -> None:
    ds = StreamingDataset(
        streams=[
            Stream(remote=str(tokens_remote), local=str(tmp_path / "a")),
            Stream(remote=str(zstd_remote), local=str(tmp_path / "b")),
        ],
        shuffle=True,
    )
    assert ds.num_samples == 2000 and len(ds) == 2000
    assert Counter(s["id"] for s in ds) == Counter(list(range(1000)) * 2)


def test_replication_gives_paired_ranks_the_same_samples(tokens_remote: Path, tmp_path: Path) -> None:
    from shardflow.dataset import World

    def rank_ids(rank: int, size: int, replication: int | None) -> list[int]:
        ds = _dataset(
            tokens_remote,
            tmp_path,
            shuffle=True,
            batch_size=8,
            num_canonical_nodes=1,
            world=World(rank, size, rank, size),
            replication=replication,
        )
        return _ids(StreamingDataLoader(ds, batch_size=8))

    alone = rank_ids(0, 2, None) + rank_ids(1, 2, None)
    paired = [rank_ids(rank, 4, 2) for rank in range(4)]
    assert paired[0] == paired[1] and paired[2] == paired[3]
    assert paired[0] + paired[2] == alone


def test_set_epoch_chooses_the_epoch(tokens_remote: Path, tmp_path: Path) -> None:
    ds = _dataset(tokens_remote, tmp_path, shuffle=True)
    epochs = [[s["id"] for s in ds] for _ in range(3)]
    ds.set_epoch(1)
    assert [s["id"] for s in ds] == epochs[1]
    assert [s["id"] for s in ds] == epochs[2]


def test_loaders_of_one_dataset_do_not_share_the_batch_path(tokens_remote: Path, tmp_path: Path) -> None:
    ds = _dataset(tokens_remote, tmp_path, batch_size=64)
    fast = StreamingDataLoader(ds, batch_size=64)
    assert len(fast) == 16 and len(list(fast)) == 16
    slow = StreamingDataLoader(ds, batch_size=64, batch_reads=False)
    assert len(slow) == 16 and [len(b["id"]) for b in slow] == [64] * 15 + [40]
    assert len(StreamingDataLoader(ds, batch_size=64, drop_last=True)) == 15
    assert [s["id"] for s in ds][:3] == [0, 1, 2], "iterating the dataset itself still yields samples"


ARRAY_COLUMNS = {
    "id": "int",
    "u8": "uint8",
    "f16": "float16",
    "i32": "int32",
    "vec": "ndarray:float32:3",
    "img": "ndarray:uint8:2,2,3",
}


class _PerSample(StreamingDataset):
    """The same dataset read one sample at a time (an override turns whole-column reads off)."""

    def get_item(self, sample_id):  # type: ignore[no-untyped-def]
        return super().get_item(sample_id)


def test_whole_column_reads_equal_per_sample_reads(tmp_path: Path) -> None:
    from shardflow.format import MDSWriter

    with MDSWriter(out=str(tmp_path / "arrays"), columns=ARRAY_COLUMNS, size_limit=2048) as writer:
        for i in range(3000):
            writer.write(
                {
                    "id": i - 1500,
                    "u8": np.uint8(i % 256),
                    "f16": np.float16(i / 7),
                    "i32": np.int32(-i),
                    "vec": np.full(3, i / 3, np.float32),
                    "img": np.full((2, 2, 3), i % 251, np.uint8),
                }
            )
    kwargs = {"local": str(tmp_path / "arrays"), "shuffle": True, "batch_size": 16}
    fast, slow = list(StreamingDataset(**kwargs)), list(_PerSample(**kwargs))
    assert len(fast) == len(slow) == 3000
    for a, b in zip(fast, slow, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert type(a[name]) is type(b[name]), name
            if isinstance(a[name], np.ndarray):
                assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name])
            else:
                assert a[name] == b[name]
    assert type(fast[0]["id"]) is int and type(fast[0]["u8"]) is np.uint8


MIXED_COLUMNS = {"label": "int", "image": "bytes", "caption": "str", "meta": "json", "score": "float32"}


def _write_mixed(folder: Path, hashes: list[str] | None = None) -> Path:
    """1,500 samples of MIXED_COLUMNS in shards of about 4 KB."""
    from shardflow.format import MDSWriter

    with MDSWriter(out=str(folder), columns=MIXED_COLUMNS, size_limit=4096, hashes=hashes) as writer:
        for i in range(1500):
            writer.write(
                {
                    "label": i % 10,
                    "image": bytes([i % 256]) * (i % 97),
                    "caption": "é" * (i % 5) + str(i),
                    "meta": {"i": i, "odd": bool(i % 2)},
                    "score": np.float32(i / 3),
                }
            )
    return folder


def test_whole_column_reads_of_variable_size_columns_equal_per_sample_reads(tmp_path: Path) -> None:
    kwargs = {"local": str(_write_mixed(tmp_path / "mixed")), "shuffle": True, "batch_size": 16}
    fast, slow = list(StreamingDataset(**kwargs)), list(_PerSample(**kwargs))
    assert len(fast) == len(slow) == 1500
    for a, b in zip(fast, slow, strict=True):
        assert list(a) == list(b) == sorted(MIXED_COLUMNS)  # MDS stores columns by name
        assert all(type(a[name]) is type(b[name]) for name in a)
        assert a == b
    assert type(fast[0]["label"]) is int and type(fast[0]["image"]) is bytes

    def batches(batch_reads: bool, workers: int) -> list[dict]:
        ds = StreamingDataset(**kwargs)
        return list(StreamingDataLoader(ds, batch_size=16, num_workers=workers, batch_reads=batch_reads))

    expected = batches(False, 0)
    for workers in (0, 2):
        got = batches(True, workers)
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            assert list(a) == list(b)
            for name in ("label", "score"):
                assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name])
            assert a["image"] == b["image"] and a["caption"] == b["caption"]
            assert a["meta"].keys() == b["meta"].keys()  # default_collate: a dict of tensors
            assert all(torch.equal(a["meta"][key], b["meta"][key]) for key in a["meta"])
            assert type(a["image"]) is list and type(a["image"][0]) is bytes


def test_workers_hand_bytes_columns_to_the_trainer_as_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without validate_hash or cache_limit, workers send where a batch's bytes values lie and the trainer
    copies them out of its own map; with either, the workers send the values; the batches are the same."""
    remote = _write_mixed(tmp_path / "mixed", hashes=["xxh64"])
    copied: list[int] = []
    read_spans = ShardReader.read_spans

    def counting(self: ShardReader, starts: np.ndarray, ends: np.ndarray) -> list[bytes]:
        copied.append(len(starts))
        return read_spans(self, starts, ends)

    monkeypatch.setattr(ShardReader, "read_spans", counting)
    plain = StreamingDataset(local=str(remote), shuffle=True, batch_size=16)
    expected = [batch["image"] for batch in StreamingDataLoader(plain, batch_size=16, batch_reads=False)]

    def images(cache: str, **kwargs: object) -> list[list[bytes]]:
        ds = _dataset(remote, tmp_path / cache, shuffle=True, batch_size=16, **kwargs)
        return [batch["image"] for batch in StreamingDataLoader(ds, batch_size=16, num_workers=2)]

    assert images("spans") == expected and sum(copied) == 1500
    copied.clear()
    assert images("hashed", validate_hash="xxh64") == expected and not copied
    assert images("limited", cache_limit="1mb") == expected and not copied


def test_the_trainer_downloads_again_a_shard_gone_since_a_worker_located_its_values(tmp_path: Path) -> None:
    remote = _write_mixed(tmp_path / "mixed")
    local = tmp_path / "cache"
    worker = _dataset(remote, local, batch_size=16)
    shard_ids, local_ids = np.array([2, 0, 1, 0]), np.array([3, 0, 1, 2])
    lease = worker.pool.lease()  # the worker's iteration holds the shards it reads
    for k in set(shard_ids.tolist()):
        lease.request(k)
    batch = read_batch(worker.pool, shard_ids, local_ids, spans=True)
    assert isinstance(batch["image"], ByteSpans) and type(batch["caption"]) is list
    plain = StreamingDataset(local=str(remote))
    starts = np.cumsum([0, *plain.samples_per_shard])
    expected = [plain[int(starts[k] + j)]["image"] for k, j in zip(shard_ids, local_ids, strict=True)]
    for shard in worker.shards[:3]:
        (local / shard.basename).unlink()  # evicted by another job: the worker's maps stay valid
    trainer = _dataset(remote, local, batch_size=16)
    assert read_spans(batch, trainer.pool)["image"] == expected
    assert trainer.cache_stats()["downloads"] == 3


def test_random_reads_keep_a_quarter_of_the_open_file_limit_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ds[i] and the trainer's reads of spans keep at most a quarter of RLIMIT_NOFILE's soft limit of
    shards open (each holds a descriptor), reopening the others when needed."""
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (64, 4096))
    remote = _write_mixed(tmp_path / "mixed")

    def image_of(caption: str) -> bytes:
        i = int(caption.lstrip("é"))
        return bytes([i % 256]) * (i % 97)

    ds = StreamingDataset(local=str(remote), batch_size=16)
    assert len(ds.shards) > 32
    for i in np.random.default_rng(3).permutation(1500).tolist() * 2:
        sample = ds[i]
        assert sample["label"] == i % 10 and sample["image"] == image_of(sample["caption"])
        assert len(ds.open_shards()) <= 16
    trainer = StreamingDataset(local=str(remote), shuffle=True, batch_size=16)
    seen = 0
    for batch in StreamingDataLoader(trainer, batch_size=16, num_workers=2):
        assert batch["image"] == [image_of(caption) for caption in batch["caption"]]
        assert len(trainer.open_shards()) <= 16
        seen += len(batch["image"])
    assert seen == 1500


def test_column_names_of_any_text_make_the_same_samples(tmp_path: Path) -> None:
    """The whole-column path builds sample dicts from the column names: quotes, braces, backslashes and
    non-ASCII names come out as written, keyed and ordered as the per-sample path keys them."""
    from shardflow.format import MDSWriter

    columns = {"it's": "int", 'say "hi"': "str", "a}{b\\n": "bytes", "ü x": "float32"}
    with MDSWriter(out=str(tmp_path / "names"), columns=columns, size_limit=2048) as writer:
        for i in range(300):
            writer.write(
                {"it's": i, 'say "hi"': f"s{i}", "a}{b\\n": bytes([i % 256]) * 3, "ü x": np.float32(i)}
            )
    fast = list(StreamingDataset(local=str(tmp_path / "names"), shuffle=True))
    slow = list(_PerSample(local=str(tmp_path / "names"), shuffle=True))
    assert fast == slow and len(fast) == 300
    assert [list(a) for a in fast] == [list(b) for b in slow] and set(fast[0]) == set(columns)
