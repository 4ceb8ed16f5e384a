"""Default settings survive ordinary faults: an epoch of 100 shards from S3 through 30% injected failures.

moto's S3 server sits behind the storage tests' fault proxy (``tests/storage/_storage_faults.py``), which
fails 30% of requests with 500, 503, a connection reset or a body cut short. ``StreamingDataset`` runs
with its defaults (``download_retry=2``, ``download_timeout=60``) into a fresh local folder, and every
sample of the epoch must come out right, for three seeds of the proxy.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shardflow.dataset import StreamingDataset
from shardflow.format import TEMP_NAME

from .conftest import token_sample, write_tokens

sys.path.insert(0, str(Path(__file__).parent.parent / "storage"))  # the storage tests' server helpers

from _storage_faults import FaultProxy  # noqa: E402
from _storage_servers import BUCKET, MOTO_CREDENTIALS, ServerProcess, moto_bucket, upload_folder  # noqa: E402

SAMPLES = 1800
SHARDS = 100
PREFIX = "faults"
FAULTS = ("500", "503", "reset", "truncate")


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """moto's S3 server holding a dataset of :data:`SHARDS` small shards under ``faults/``."""
    folder = write_tokens(tmp_path_factory.mktemp("faults-dataset") / "ds", SAMPLES, size_limit=1024)
    shards = sorted(folder.glob("shard.*.mds"))
    assert len(shards) == SHARDS, f"{len(shards)} shards: adjust SAMPLES or size_limit"
    with moto_bucket(tmp_path_factory.mktemp("moto")) as (server, client):
        upload_folder(client, folder, PREFIX)
        yield server


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_epoch_through_30_percent_faults_with_the_default_settings(
    moto: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    local = tmp_path / "cache"
    with FaultProxy(moto.port, rate=0.3, faults=FAULTS, seed=seed) as proxy:
        monkeypatch.setenv("S3_ENDPOINT_URL", proxy.endpoint)
        for name, value in MOTO_CREDENTIALS.items():
            monkeypatch.setenv(name, value)
        dataset = StreamingDataset(remote=f"s3://{BUCKET}/{PREFIX}", local=str(local))
        ids = []
        for sample in dataset:
            i = int(sample["id"])
            expected = token_sample(i)
            assert sample["text"] == expected["text"], f"sample {i}"
            assert np.array_equal(sample["tokens"], expected["tokens"]), f"sample {i}"
            ids.append(i)
    assert sorted(ids) == list(range(SAMPLES)), "every sample once"
    gets = sum(n for (method, path), n in proxy.requests.items() if method == "GET" and "/shard." in path)
    assert gets >= SHARDS
    assert set(proxy.injected) == set(FAULTS) and sum(proxy.injected.values()) >= 0.2 * proxy.total_requests
    assert not [path for path in local.rglob("*") if TEMP_NAME.match(path.name)]
