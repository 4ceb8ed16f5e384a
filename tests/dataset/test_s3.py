"""Streaming from S3 (moto's server on 127.0.0.1): shared cache, one download per shard, clear errors.

Requests go through a counting loopback proxy (``tests/storage/_storage_faults.py``, no faults injected)
in front of moto, so the test counts the GETs of every object at the server side. Ranks are real
processes (``_dataset_rank.py``) reading ``s3://`` through shardflow.storage, with the endpoint from
``S3_ENDPOINT_URL`` and credentials from the environment.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shardflow.dataset import DatasetConfigError, StreamingDataset
from shardflow.format import ShardMissingError

from ._dataset_rank import clean_env, run_ranks
from .conftest import token_sample, write_tokens

sys.path.insert(0, str(Path(__file__).parent.parent / "storage"))  # the storage tests' server helpers

from _storage_faults import FaultProxy  # noqa: E402
from _storage_servers import BUCKET, ServerProcess, start_moto  # noqa: E402

NUM_SAMPLES = 1000
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}
TIMEOUT = 240  # seconds for both ranks; only a hang gets near it


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """moto's S3 server, bucket ``shardflow-test``: ``ds/`` holds the dataset, ``broken/`` lacks a shard."""
    import boto3

    server = start_moto(tmp_path_factory.mktemp("moto"))
    try:
        client = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        client.create_bucket(Bucket=BUCKET)
        folder = write_tokens(tmp_path_factory.mktemp("s3-dataset") / "ds", NUM_SAMPLES)
        for path in sorted(folder.iterdir()):
            client.upload_file(str(path), BUCKET, f"ds/{path.name}")
            if path.name != "shard.00003.mds":
                client.upload_file(str(path), BUCKET, f"broken/{path.name}")
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(moto: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> str:
    """This process reaches moto directly; returns the endpoint."""
    monkeypatch.setenv("S3_ENDPOINT_URL", moto.endpoint)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return moto.endpoint


def test_two_ranks_two_workers_share_one_cache_and_download_each_shard_once(
    moto: ServerProcess, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    remote = f"s3://{BUCKET}/ds"
    with FaultProxy(moto.port) as proxy:  # rate 0: forwards everything, counts every request
        configs, envs = [], []
        for rank in range(2):
            configs.append(
                {
                    "remote": remote,
                    "local": str(cache),
                    "batch_size": 8,
                    "workers": 2,
                    "mode": "env",
                    "check_values": True,
                }
            )
            envs.append(
                clean_env(
                    RANK=rank,
                    WORLD_SIZE=2,
                    LOCAL_RANK=rank,
                    LOCAL_WORLD_SIZE=2,
                    S3_ENDPOINT_URL=proxy.endpoint,
                    **CREDENTIALS,
                )
            )
        reports = run_ranks(configs, envs, tmp_path, TIMEOUT)
        requests = dict(proxy.requests)
    ids = [i for report in reports for batch in report["batches"] for i in batch]
    assert sorted(ids) == list(range(NUM_SAMPLES)), "every sample once over both ranks"
    assert [report["bad"] for report in reports] == [[], []], "samples that differ from what was written"
    assert [report["world"] for report in reports] == [[0, 2, 0, 2], [1, 2, 1, 2]]

    shards = sorted(p.name for p in cache.glob("shard.*.mds"))
    assert len(shards) > 5
    gets = {path.rsplit("/", 1)[1]: n for (method, path), n in requests.items() if method == "GET"}
    assert {name: gets.get(name, 0) for name in shards} == {name: 1 for name in shards}, (
        "each shard is downloaded once by the node (4 workers over 2 ranks share the cache)"
    )
    assert set(gets) <= {*shards, "index.json"}
    assert 1 <= gets["index.json"] <= 2  # at most once per rank process


def test_a_remote_without_index_is_refused_at_construction(s3_env: str, tmp_path: Path) -> None:
    with pytest.raises(
        DatasetConfigError, match=f"s3://{BUCKET}/nothing-here/index.json does not exist"
    ) as caught:
        StreamingDataset(remote=f"s3://{BUCKET}/nothing-here", local=str(tmp_path))
    assert "no such object" in str(caught.value) and "no such bucket" not in str(caught.value)
    assert not (tmp_path / "index.json").exists()


def test_a_shard_missing_on_the_remote_raises_when_read(s3_env: str, tmp_path: Path) -> None:
    ds = StreamingDataset(remote=f"s3://{BUCKET}/broken", local=str(tmp_path))
    in_shard_3 = ds._starts[3]  # the first sample of shard.00003.mds
    before = ds[in_shard_3 - 1]  # shard 2 is there
    expected = token_sample(in_shard_3 - 1)
    assert before["text"] == expected["text"] and np.array_equal(before["tokens"], expected["tokens"])
    with pytest.raises(ShardMissingError, match=f"s3://{BUCKET}/broken/shard.00003.mds"):
        ds[in_shard_3]
    with pytest.raises(ShardMissingError, match=f"s3://{BUCKET}/broken/shard.00003.mds"):
        list(ds)


def test_a_wrong_bucket_fails_clearly_at_construction(s3_env: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetConfigError) as caught:
        StreamingDataset(remote="s3://no-such-bucket-here/ds", local=str(tmp_path))
    message = str(caught.value)
    assert "s3://no-such-bucket-here/ds/index.json" in message
    assert "no such bucket" in message, "a missing bucket must read differently from a missing index"
