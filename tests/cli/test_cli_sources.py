"""``shardflow inspect`` and ``shardflow index`` over data a source reads (Parquet here; tars and LitData
folders go through the same path): described without conversion, indexed ahead of training where the
stream then finds the index and reuses it."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardflow._cli import main
from shardflow.dataset import Stream, StreamingDataset
from shardflow.dataset.sources import PUBLISHED_INDEX

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

sys.path.insert(0, str(Path(__file__).parent.parent / "storage"))  # the storage tests' server helpers

from _storage_faults import FaultProxy  # noqa: E402
from _storage_servers import BUCKET, ServerProcess, moto_bucket, moto_client  # noqa: E402
from _storage_servers import MOTO_CREDENTIALS as CREDENTIALS  # noqa: E402

FILES, ROWS = 3, 120  # rows per file, in row groups of 50


def write_parquet(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(FILES):
        ids = list(range(k * ROWS, (k + 1) * ROWS))
        table = pa.table({"id": pa.array(ids, pa.int64()), "text": [f"row {i}" for i in ids]})
        pq.write_table(table, folder / f"part-{k}.parquet", row_group_size=50)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with moto_bucket(tmp_path_factory.mktemp("moto")) as (server, client):
        data = tmp_path_factory.mktemp("parquet")
        write_parquet(data)
        for path in sorted(data.iterdir()):
            client.upload_file(str(path), BUCKET, f"pq/{path.name}")
        yield server


@pytest.fixture
def s3(moto: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("S3_ENDPOINT_URL", moto.endpoint)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return f"s3://{BUCKET}"


def test_inspect_describes_a_parquet_folder_without_converting_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARDFLOW_CACHE_DIR", str(tmp_path / "home"))
    write_parquet(tmp_path / "pq")
    status, out, _ = run(capsys, "inspect", str(tmp_path / "pq"), "--json")
    assert status == 0
    report = json.loads(out)
    assert report["source_kind"] == "parquet"
    assert report["samples"] == FILES * ROWS
    assert set(report["columns"]) == {"id", "text"}
    assert report["formats"] == ["parquet"]
    assert not (tmp_path / "home").exists(), "inspect cached an index"
    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == [f"part-{k}.parquet" for k in range(FILES)]


def test_inspect_refuses_a_folder_no_source_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    status, _, err = run(capsys, "inspect", str(tmp_path / "notes"))
    assert status == 1
    assert "no source recognises" in err and "parquet" in err
    write_parquet(tmp_path / "pq")
    status, _, err = run(capsys, "inspect", str(tmp_path / "pq"), "--format", "webdataset")
    assert status == 1
    assert "the webdataset source finds nothing to read there" in err


def test_index_of_a_remote_parquet_folder_is_the_one_training_reuses(
    s3: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    status, out, _ = run(capsys, "inspect", f"{s3}/pq", "--json")
    assert status == 0 and json.loads(out)["samples"] == FILES * ROWS
    status, out, _ = run(capsys, "index", f"{s3}/pq", "--local", str(cache), "--json")
    assert status == 0
    built = Path(json.loads(out)["index"])
    assert built.parent == cache and built.is_file()
    stamp = built.stat().st_mtime_ns
    dataset = StreamingDataset(remote=f"{s3}/pq", local=str(cache), batch_size=4)
    assert sorted(int(dataset[i]["id"]) for i in range(len(dataset))) == list(range(FILES * ROWS))
    assert built.stat().st_mtime_ns == stamp, "training rebuilt the index that shardflow index made"


def test_index_of_a_local_folder_goes_where_an_in_place_stream_looks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARDFLOW_CACHE_DIR", str(tmp_path / "home"))
    write_parquet(tmp_path / "pq")
    status, out, _ = run(capsys, "index", str(tmp_path / "pq"), "--json")
    assert status == 0
    built = Path(json.loads(out)["index"])
    stream = Stream(local=str(tmp_path / "pq"))
    assert len(stream.load_shards(allow_unsafe_types=False)) == json.loads(out)["shards"]
    assert stream.built_index_path() == built
    status, _, err = run(capsys, "index", str(tmp_path / "nowhere"))
    assert status == 1 and "nowhere" in err


def test_a_published_index_spares_a_new_node_every_footer_until_a_file_changes(
    moto: ServerProcess,
    s3: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = moto_client(moto.endpoint)
    data = tmp_path / "data"
    write_parquet(data)
    for path in sorted(data.iterdir()):
        client.upload_file(str(path), BUCKET, f"pub/{path.name}")
    status, out, _ = run(capsys, "index", f"{s3}/pub", "--local", str(tmp_path / "a"), "--publish", "--json")
    report = json.loads(out)
    assert status == 0 and report["published"] == f"{s3}/pub/{PUBLISHED_INDEX}"
    published = client.get_object(Bucket=BUCKET, Key=f"pub/{PUBLISHED_INDEX}")["Body"].read()
    assert published == Path(report["index"]).read_bytes()

    def new_node(cache: str) -> tuple[StreamingDataset, dict]:
        with FaultProxy(moto.port) as proxy:  # counts the requests on their way to moto
            monkeypatch.setenv("S3_ENDPOINT_URL", proxy.endpoint)
            dataset = StreamingDataset(remote=f"{s3}/pub", local=str(tmp_path / cache), batch_size=4)
            return dataset, dict(proxy.requests)

    dataset, requests = new_node("b")
    assert not [path for _, path in requests if path.endswith(".parquet")], "no footer was read"
    assert requests[("GET", f"/{BUCKET}/pub/{PUBLISHED_INDEX}")] == 1
    assert sorted(int(dataset[i]["id"]) for i in range(len(dataset))) == list(range(FILES * ROWS))
    assert dataset.streams[0].built_index_path().read_bytes() == published

    # A file rewritten since: the published index no longer describes the folder, so it is not used.
    table = pa.table({"id": pa.array([7_000, 7_001], pa.int64()), "text": ["new", "new"]})
    pq.write_table(table, data / "part-1.parquet")
    client.upload_file(str(data / "part-1.parquet"), BUCKET, "pub/part-1.parquet")
    with caplog.at_level("WARNING", logger="shardflow.dataset.sources"):
        dataset, requests = new_node("c")
    assert [path for _, path in requests if path.endswith(".parquet")], "the footers were read again"
    assert "changed since it was published" in caplog.text
    ids = sorted(int(dataset[i]["id"]) for i in range(len(dataset)))
    assert ids == [*range(ROWS), *range(2 * ROWS, 3 * ROWS), 7_000, 7_001]

    status, _, err = run(capsys, "index", str(data), "--publish")
    assert status == 1 and "--publish needs a storage URL" in err
