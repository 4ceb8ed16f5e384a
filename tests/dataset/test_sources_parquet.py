"""Parquet files and plain files streamed from S3 (moto's server on 127.0.0.1) without an index.json: the
index is built from footers (or the listing), cached and reused; 2 ranks x 2 workers read every row once,
a resume on another world is exact, and a Parquet stream mixes with an MDS stream by proportion.

Ranks are real processes (``_dataset_rank.py``: a gloo process group over TCP on 127.0.0.1), each with a
2-worker StreamingDataLoader; the ranks of a run share one cache folder, as the ranks of a node do, and
reach moto through ``S3_ENDPOINT_URL`` and the credentials in their environment. A resume loads the state
rank 0 saved mid-epoch into a run of another world shape, which must read exactly the rest of the epoch:
its global steps (every rank's ``s``-th batch) equal the whole run's from that step on.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shardflow.dataset import StreamingDataset
from shardflow.dataset.sources import BUILT_INDEX

from ._dataset_rank import kept_batches, run_node
from .conftest import token_sample, write_tokens
from .test_distributed import global_steps

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

sys.path.insert(0, str(Path(__file__).parent.parent / "storage"))  # the storage tests' server helpers

from _storage_faults import FaultProxy  # noqa: E402
from _storage_servers import BUCKET, ServerProcess, moto_bucket, moto_client  # noqa: E402
from _storage_servers import MOTO_CREDENTIALS as CREDENTIALS  # noqa: E402

ROWS = 600  # in 3 files of 2-3 row groups each
GLOBAL_BATCH = 8  # batch_size x ranks: what a resumed run keeps (the epoch is laid out in global batches)
STOP = 20  # the global step after which rank 0 saves its state
PARQUET_BASE = 10_000  # ids of the Parquet rows in the mixed dataset


def parquet_table(ids: np.ndarray) -> object:
    """The rows ``ids`` as :func:`token_sample` makes them (id, tokens, text)."""
    samples = [token_sample(int(i)) for i in ids]
    tokens = np.stack([s["tokens"] for s in samples]).reshape(-1)
    return pa.table(
        {
            "id": pa.array(ids.astype(np.int64)),
            "tokens": pa.FixedSizeListArray.from_arrays(pa.array(tokens), 8),
            "text": [s["text"] for s in samples],
        }
    )


def write_parquet(folder: Path, start: int, rows: int) -> list[Path]:
    sizes = [250, 250, rows - 500]
    paths, at = [], start
    for k, count in enumerate(sizes):
        path = folder / f"part/{k:02d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(parquet_table(np.arange(at, at + count)), path, row_group_size=100)
        paths.append(path)
        at += count
    return paths


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``pq/`` holds the Parquet files (ids 0..599), ``mix/`` ids from 10,000, ``files/`` plain files."""
    with moto_bucket(tmp_path_factory.mktemp("moto")) as (server, client):
        data = tmp_path_factory.mktemp("parquet")
        for prefix, start in (("pq", 0), ("mix", PARQUET_BASE)):
            for path in write_parquet(data / prefix, start, ROWS):
                client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(data / prefix)}")
        client.put_object(Bucket=BUCKET, Key="pq/_SUCCESS", Body=b"")  # left out of the listing
        for name, body in plain_files().items():
            client.put_object(Bucket=BUCKET, Key=f"files/{name}", Body=body)
        yield server


def plain_files() -> dict[str, bytes]:
    return {
        f"{kind}/{k:03d}.txt": f"{kind} {k}".encode() * (k + 1) for kind in ("ant", "bee") for k in range(30)
    }


@pytest.fixture
def s3(moto: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("S3_ENDPOINT_URL", moto.endpoint)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return f"s3://{BUCKET}"


def rank_env(server: ServerProcess) -> dict[str, object]:
    """What a rank process needs to reach moto."""
    return {"S3_ENDPOINT_URL": server.endpoint, **CREDENTIALS}


def config(streams: list[dict[str, Any]], ranks: int, workers: int, **extra: object) -> dict[str, Any]:
    """A rank's config: ``streams`` shuffled (seed 5), in global batches of GLOBAL_BATCH."""
    return {"streams": streams, "batch_size": GLOBAL_BATCH // ranks, "workers": workers, "shuffle_seed": 5,
            **extra}  # fmt: skip


def parquet_stream(cache: Path, **kwargs: object) -> dict[str, Any]:
    # Shards of one row group each (the files are small), so the cache fetches row groups.
    return {"remote": f"s3://{BUCKET}/pq", "local": str(cache), "format": "parquet",
            "format_options": {"shard_bytes": 1}, **kwargs}  # fmt: skip


def steps(reports: list[dict]) -> list[list[Any]]:
    """The run's global steps, each sorted (the ranks' order within a step differs between world shapes)."""
    return [sorted(step) for step in global_steps(reports)]


@pytest.fixture(scope="module")
def parquet_run(moto: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    """2 ranks x 2 workers read the Parquet files' epoch whole (rank 0 saves its state after STOP steps);
    their reports and shared cache folder."""
    folder = tmp_path_factory.mktemp("parquet-run")
    make = config([parquet_stream(folder / "cache")], 2, 2, check_values=True, state_at=STOP)
    return run_node(make, 2, folder, rank_env(moto)), folder / "cache"


def test_two_ranks_two_workers_read_every_row_once_from_s3(parquet_run: tuple[list[dict], Path]) -> None:
    reports, cache = parquet_run
    ids = [i for report in reports for batch in report["batches"] for i in batch]
    assert sorted(ids) == list(range(ROWS)), "every row once over both ranks"
    assert [report["bad"] for report in reports] == [[], []], "rows that differ from what was written"
    fetched = sorted(p.name for p in (cache / "part").iterdir())
    # Row groups of the two 3-row-group files; the third file has one row group: fetched whole.
    assert fetched == [f"{k:02d}.parquet.rg{g}" for k in range(2) for g in range(3)] + ["02.parquet"]
    assert (cache / BUILT_INDEX).is_file() and not (cache / "index.json").exists()


def test_the_built_index_is_reused_and_rebuilt_when_a_file_changes(s3: str, tmp_path: Path, moto) -> None:
    cache = tmp_path / "cache"
    first = StreamingDataset(remote=f"{s3}/mix", local=str(cache), batch_size=4)  # detected: parquet
    assert len(first) == ROWS and first.shards[0].format == "parquet"
    built = (cache / BUILT_INDEX).stat().st_mtime_ns
    again = StreamingDataset(remote=f"{s3}/mix", local=str(cache), batch_size=4)
    assert (cache / BUILT_INDEX).stat().st_mtime_ns == built and len(again) == ROWS
    assert int(again[0]["id"]) == PARQUET_BASE

    import boto3

    client = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")  # fmt: skip
    changed = tmp_path / "changed.parquet"
    pq.write_table(parquet_table(np.arange(50_000, 50_040)), changed)
    client.upload_file(str(changed), BUCKET, "mix/part/00.parquet")
    try:
        rebuilt = StreamingDataset(remote=f"{s3}/mix", local=str(cache), batch_size=4)
        assert len(rebuilt) == ROWS - 250 + 40
        assert int(rebuilt[0]["id"]) == 50_000  # not the stale cached file
    finally:
        table = parquet_table(np.arange(PARQUET_BASE, PARQUET_BASE + 250))
        pq.write_table(table, changed, row_group_size=100)
        client.upload_file(str(changed), BUCKET, "mix/part/00.parquet")


def test_resume_mid_epoch_on_another_world_is_exact(
    parquet_run: tuple[list[dict], Path], moto: ServerProcess, tmp_path: Path
) -> None:
    whole, _ = parquet_run
    assert whole[0]["state"]["sample_in_epoch"] == STOP * GLOBAL_BATCH
    make = config([parquet_stream(tmp_path / "cache")], 1, 3)
    rest = run_node(make, 1, tmp_path, rank_env(moto), state=whole[0]["state"])  # 1 rank x 3 workers
    assert steps(rest) == steps(whole)[STOP:], "exactly the rest of the epoch, step by step"


def test_an_mds_stream_and_a_parquet_stream_mix_by_proportion(moto: ServerProcess, tmp_path: Path) -> None:
    mds = write_tokens(tmp_path / "mds", 300)
    streams = [
        {"local": str(mds), "proportion": 1},
        {"remote": f"s3://{BUCKET}/mix", "local": str(tmp_path / "cache"), "proportion": 3},
    ]
    make = config(streams, 2, 2, epoch_size=800, check_values=True)
    reports = run_node(make, 2, tmp_path, rank_env(moto))
    assert [report["bad"] for report in reports] == [[], []], "samples that differ from what was written"
    ids = [i for report in reports for batch in report["batches"] for i in batch]
    counts = Counter("parquet" if i >= PARQUET_BASE else "mds" for i in ids)
    assert counts == {"mds": 200, "parquet": 600}
    assert set(ids) >= set(range(PARQUET_BASE, PARQUET_BASE + ROWS))  # 600 of 600 rows: each once
    assert len(set(i for i in ids if i < PARQUET_BASE)) == 200


def test_plain_files_with_labels_two_ranks_two_workers_and_resume(
    moto: ServerProcess, tmp_path: Path
) -> None:
    files = plain_files()

    def make(cache: Path, ranks: int, workers: int, **extra: object) -> dict[str, Any]:
        stream = {"remote": f"s3://{BUCKET}/files", "local": str(cache), "format": "files",
                  "format_options": {"labels": True, "pack_files": 8}}  # fmt: skip
        return config([stream], ranks, workers, id_key="path", keep_samples=True, **extra)

    whole = run_node(make(tmp_path / "a", 2, 2, state_at=3), 2, tmp_path / "whole", rank_env(moto))
    assert sorted(path for step in steps(whole) for path in step) == sorted(files), "every file once"
    one = make(tmp_path / "b", 1, 1)  # 1 rank x 1 worker
    rest = run_node(one, 1, tmp_path / "rest", rank_env(moto), state=whole[0]["state"])
    assert steps(rest) == steps(whole)[3:], "exactly the rest of the epoch, step by step"
    for report in whole + rest:
        for batch in kept_batches(report):
            for k, path in enumerate(batch["path"]):
                assert batch["bytes"][k] == files[path]
                assert batch["label"][k].item() == (0 if path.startswith("ant/") else 1)
                assert batch["label_name"][k] == path.split("/")[0]


def test_a_folder_read_in_place_is_detected_and_nothing_is_written_into_it(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("SHARDFLOW_CACHE_DIR", str(tmp_path / "home"))
    folder = tmp_path / "local"
    write_parquet(folder, 0, ROWS)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    dataset = StreamingDataset(local=str(folder), batch_size=4)
    assert sorted(int(s["id"]) for s in dataset) == list(range(ROWS))
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert len(list((tmp_path / "home" / "sources").rglob(BUILT_INDEX))) == 1


def test_a_folder_of_nothing_known_names_the_sources(tmp_path: Path) -> None:
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "notes.txt").write_text("hi")
    from shardflow.dataset import NoShardsError

    with pytest.raises(NoShardsError, match="no other source .*parquet"):
        StreamingDataset(local=str(folder), batch_size=4)


def test_many_files_are_indexed_from_one_listing_and_one_read_per_footer(
    moto: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = 40
    client = moto_client(moto.endpoint)
    local = tmp_path / "one.parquet"
    pq.write_table(parquet_table(np.arange(10)), local)
    for k in range(files):
        client.upload_file(str(local), BUCKET, f"many/part-{k:03d}.parquet")
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with FaultProxy(moto.port) as proxy:  # counts the requests on their way to moto
        monkeypatch.setenv("S3_ENDPOINT_URL", proxy.endpoint)
        cold = StreamingDataset(remote=f"s3://{BUCKET}/many", local=str(tmp_path / "cache"), batch_size=4)
        assert len(cold) == files * 10
        per_file = {key: n for key, n in proxy.requests.items() if key[1].endswith(".parquet")}
        # The listing gives sizes and versions (no HEAD per file); each footer comes in one ranged read.
        assert set(per_file.values()) == {1} and {method for method, _ in per_file} == {"GET"}
        assert len(per_file) == files
        listings = sum(n for (method, path), n in proxy.requests.items() if path.rstrip("/") == f"/{BUCKET}")
        assert listings == 1, "detecting the source and building its index share one listing"
        proxy.requests.clear()
        warm = StreamingDataset(remote=f"s3://{BUCKET}/many", local=str(tmp_path / "cache"), batch_size=4)
        assert len(warm) == files * 10
        assert not any(path.endswith(".parquet") for _, path in proxy.requests), "the index is reused"
