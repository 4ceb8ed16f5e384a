"""Converting into ``--out s3://...`` (moto's server on 127.0.0.1): same samples as a local conversion,
``--resume`` keeps the finished remote partitions.

The CLIs run as subprocesses with the endpoint in ``S3_ENDPOINT_URL`` and test credentials in the
environment; nothing but loopback is reached.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "storage"))  # the storage tests' server helpers

from _storage_servers import BUCKET, ServerProcess, moto_bucket, moto_client  # noqa: E402
from _storage_servers import MOTO_CREDENTIALS as CREDENTIALS  # noqa: E402


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    pytest.importorskip("boto3")
    with moto_bucket(tmp_path_factory.mktemp("moto")) as (server, _):
        yield server


@pytest.fixture
def s3(moto: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> Any:
    """This process and the CLIs it starts reach moto; returns a boto3 client."""
    monkeypatch.setenv("S3_ENDPOINT_URL", moto.endpoint)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return moto_client(moto.endpoint)


def _keys(client: Any, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
    return sorted(item["Key"][len(prefix) + 1 :] for page in pages for item in page.get("Contents", []))


def _download(client: Any, prefix: str, folder: Path) -> Path:
    for key in _keys(client, prefix):
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(BUCKET, f"{prefix}/{key}", str(path))
    return folder


def _stamp(client: Any, key: str) -> Any:
    return client.head_object(Bucket=BUCKET, Key=key)["LastModified"]


def _jsonl(path: Path, count: int) -> Path:
    with path.open("w") as file:
        for k in range(count):
            file.write(json.dumps({"id": k, "text": f"line {k} " + "z" * (k % 50)}) + "\n")
    return path


def test_jsonl_to_s3_equals_a_local_conversion(s3: Any, tmp_path: Path, cli, reader) -> None:
    from shardflow.dataset import StreamingDataset

    source = _jsonl(tmp_path / "in.jsonl", 3000)
    common = ("--workers", "2", "--size-limit", "20kb")
    assert cli("jsonl", source, "--out", tmp_path / "local", *common).returncode == 0
    result = cli("jsonl", source, "--out", f"s3://{BUCKET}/jsonl", *common)
    assert result.returncode == 0, result.stderr
    keys = _keys(s3, "jsonl")
    assert "index.json" in keys and "convert.json" in keys
    assert len([k for k in keys if k.endswith("/index.json")]) == 8  # 4 partitions per worker
    expected = reader(tmp_path / "local")
    assert len(expected) == 3000
    assert reader(_download(s3, "jsonl", tmp_path / "down")) == expected
    streamed = StreamingDataset(remote=f"s3://{BUCKET}/jsonl", local=str(tmp_path / "cache"))
    assert [streamed[i] for i in range(len(streamed))] == expected


def test_imagefolder_to_s3_equals_a_local_conversion(s3: Any, tmp_path: Path, cli, reader) -> None:
    from PIL import Image

    for k in range(24):
        folder = tmp_path / "in" / f"class{k % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        Image.effect_noise((16 + k, 20), 30).convert("RGB").save(buffer, "JPEG")
        (folder / f"{k:03d}.jpg").write_bytes(buffer.getvalue())
    (tmp_path / "in" / "class1" / "bad.jpg").write_bytes(b"not an image")
    assert cli("imagefolder", tmp_path / "in", "--out", tmp_path / "local", "--workers", "2").returncode == 0
    result = cli("imagefolder", tmp_path / "in", "--out", f"s3://{BUCKET}/images", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "bad.jpg" in result.stderr and "1 skipped" in result.stderr
    down = _download(s3, "images", tmp_path / "down")
    assert json.loads((down / "classes.json").read_text()) == {"classes": ["class0", "class1", "class2"]}
    expected = reader(tmp_path / "local")
    assert len(expected) == 24 and reader(down) == expected


def test_resume_into_s3_keeps_finished_partitions(s3: Any, tmp_path: Path, cli, reader) -> None:
    source = _jsonl(tmp_path / "in.jsonl", 2000)
    out = f"s3://{BUCKET}/resume"
    common = ("--workers", "2", "--partitions", "4", "--size-limit", "10kb")
    assert cli("jsonl", source, "--out", out, *common).returncode == 0
    kept = {k: _stamp(s3, f"resume/{k}") for k in _keys(s3, "resume") if not k.startswith("part.00002/")}
    # An interrupted run: no merged index, partition 2 unfinished (no index.json, a stray shard).
    s3.delete_object(Bucket=BUCKET, Key="resume/index.json")
    s3.delete_object(Bucket=BUCKET, Key="resume/part.00002/index.json")
    s3.put_object(Bucket=BUCKET, Key="resume/part.00002/shard.99999.mds", Body=b"partial")
    time.sleep(1.1)  # S3 times are whole seconds: anything rewritten from here on is newer

    refused = cli("jsonl", source, "--out", out, *common)
    assert refused.returncode == 1 and "is not empty" in refused.stderr and "--resume" in refused.stderr

    result = cli("jsonl", source, "--out", out, *common, "--resume")
    assert result.returncode == 0, result.stderr
    assert "3 of 4 partitions are finished, converting 1" in result.stderr
    assert "shard.99999.mds" not in _keys(s3, "resume/part.00002")
    redone = _stamp(s3, "resume/part.00002/index.json")
    for key, stamp in kept.items():
        if key.startswith("part."):  # not rewritten: the same time (whole seconds), older than the redone one
            assert _stamp(s3, f"resume/{key}") == stamp < redone, key

    other = _jsonl(tmp_path / "other.jsonl", 2001)
    mismatch = cli("jsonl", other, "--out", out, *common, "--resume")
    assert mismatch.returncode == 1 and "other input or options" in mismatch.stderr
    etags = {k: s3.head_object(Bucket=BUCKET, Key=f"resume/{k}")["ETag"] for k in _keys(s3, "resume")}
    zstd = cli("jsonl", source, "--out", out, *common, "--compression", "zstd", "--resume")
    assert zstd.returncode == 1 and '--compression: null then, "zstd" now' in zstd.stderr
    assert {k: s3.head_object(Bucket=BUCKET, Key=f"resume/{k}")["ETag"] for k in _keys(s3, "resume")} == etags

    assert cli("jsonl", source, "--out", tmp_path / "local", *common).returncode == 0
    assert reader(_download(s3, "resume", tmp_path / "down")) == reader(tmp_path / "local")
