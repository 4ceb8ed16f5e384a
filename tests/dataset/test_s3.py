"""Streaming from S3 (moto's server on 127.0.0.1): shared cache, one download per shard, clear errors.

Requests go through a counting loopback proxy (``tests/storage/_storage_faults.py``, no faults injected)
in front of moto, so the test counts the GETs of every object at the server side. Ranks are real
processes (``_dataset_rank.py``) reading ``s3://`` through shardflow.storage, with the endpoint from
``S3_ENDPOINT_URL`` and credentials from the environment.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shardflow.dataset import DatasetConfigError, StreamingDataset
from shardflow.format import TEMP_NAME, ShardMissingError

from ._dataset_rank import clean_env, dump_and_kill, free_port, run_ranks, signal_all, start_rank
from .conftest import token_sample, write_tokens
from .test_cache import shard_bytes
from .test_cache_processes import FolderSampler

sys.path.insert(0, str(Path(__file__).parent.parent / "storage"))  # the storage tests' server helpers

from _storage_faults import FaultProxy  # noqa: E402
from _storage_servers import BUCKET, ServerProcess, moto_bucket, moto_client, upload_folder  # noqa: E402
from _storage_servers import MOTO_CREDENTIALS as CREDENTIALS  # noqa: E402

NUM_SAMPLES = 1000
BIG_SAMPLES = 4000  # the ``big/`` dataset: about 90 shards of 2 KiB, for the cache_limit runs
TIMEOUT = 240  # seconds for both ranks; only a hang gets near it


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """moto's S3 server, bucket ``shardflow-test``: ``ds/`` holds the dataset, ``broken/`` lacks a shard."""
    with moto_bucket(tmp_path_factory.mktemp("moto")) as (server, client):
        folder = write_tokens(tmp_path_factory.mktemp("s3-dataset") / "ds", NUM_SAMPLES)
        upload_folder(client, folder, "ds")
        for path in sorted(folder.iterdir()):
            if path.name != "shard.00003.mds":
                client.upload_file(str(path), BUCKET, f"broken/{path.name}")
        big = write_tokens(tmp_path_factory.mktemp("s3-big") / "big", BIG_SAMPLES, size_limit=2048)
        upload_folder(client, big, "big")
        yield server


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
    with FaultProxy(moto.port) as proxy:  # rate 0: forwards everything, counts every request
        configs, envs = two_ranks(proxy.endpoint, "ds", cache)
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


# -- cache_limit (the node-cache issue) ------------------------------------------------------------------


def big_bytes(moto: ServerProcess) -> int:
    """Bytes of the shards of ``big/`` on the server."""
    listed = moto_client(moto.endpoint).list_objects_v2(Bucket=BUCKET, Prefix="big/shard.")["Contents"]
    return sum(item["Size"] for item in listed)


def two_ranks(endpoint: str, prefix: str, cache: Path, **extra: object) -> tuple[list[dict], list[dict]]:
    """Configs and environments of 2 ranks x 2 workers reading ``prefix`` shuffled into ``cache``."""
    configs, envs = [], []
    for rank in range(2):
        configs.append(
            {
                "remote": f"s3://{BUCKET}/{prefix}",
                "local": str(cache),
                "batch_size": 8,
                "workers": 2,
                "mode": "env",
                "check_values": True,
                **extra,
            }
        )
        envs.append(
            clean_env(
                RANK=rank,
                WORLD_SIZE=2,
                LOCAL_RANK=rank,
                LOCAL_WORLD_SIZE=2,
                S3_ENDPOINT_URL=endpoint,
                **CREDENTIALS,
            )
        )
    return configs, envs


def cache_limit_ranks(
    endpoint: str, cache: Path, limit: int, seed: int = 17
) -> tuple[list[dict], list[dict]]:
    """:func:`two_ranks` over ``big/`` with ``cache_limit``."""
    return two_ranks(endpoint, "big", cache, cache_limit=limit, predownload=2, shuffle_seed=seed)


def check_epoch(reports: list[dict], samples: int) -> None:
    ids = sorted(i for report in reports for batch in report["batches"] for i in batch)
    assert ids == list(range(samples)), "every sample once over the ranks"
    assert all(report["bad"] == [] for report in reports), "samples that differ from what was written"


def test_a_quarter_of_the_dataset_as_cache_limit_with_two_ranks_of_two_workers(
    moto: ServerProcess, tmp_path: Path
) -> None:
    """The bar: every sample right, and a sampler of the folder every 50 ms never sees it above the limit
    (the downloads in flight, at most 4 processes x 3 shards here, stay below it)."""
    cache = tmp_path / "cache"
    limit = big_bytes(moto) // 4
    with FaultProxy(moto.port) as proxy, FolderSampler(cache) as sampler:
        reports = run_ranks(*cache_limit_ranks(proxy.endpoint, cache, limit), tmp_path, TIMEOUT)
        requests = dict(proxy.requests)
    check_epoch(reports, BIG_SAMPLES)
    assert sampler.samples > 10 and 0 < sampler.peak[cache] <= limit
    gets = sum(n for (method, path), n in requests.items() if method == "GET" and "/shard." in path)
    shards = len(list((cache / ".shardflow-cache").glob("*.json"))) + len(
        list((cache / ".shardflow-cache").glob("*.evicted"))
    )
    assert gets >= shards > 0 and list((cache / ".shardflow-cache").glob("*.evicted")), "nothing was evicted"
    assert shard_bytes(cache) <= limit
    assert not [p for p in cache.rglob("*") if TEMP_NAME.match(p.name)]


def _family(process: subprocess.Popen[bytes]) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _downloader(cache: Path, deadline: float) -> int | None:
    """The pid in the name of a temporary file of a download in flight in ``cache``, if one shows up."""
    while time.monotonic() < deadline:
        for path in cache.glob(".*.tmp"):
            if TEMP_NAME.match(path.name):
                return int(path.name.rsplit(".", 2)[-2].split("-")[0])
        time.sleep(0.005)
    return None


@pytest.mark.slow
def test_kill_minus_9_at_ten_random_moments_then_a_new_run_completes(
    moto: ServerProcess, tmp_path: Path
) -> None:
    """A worker, a rank, or whichever process is downloading, killed with SIGKILL while 2 ranks x 2 workers
    read with a limit from a server that sends each answer in two halves 0.2 s apart (then, half a second
    later, the rest of them); after each kill, a new run on the same folder completes the epoch within the
    normal time and leaves no temporary file."""
    cache = tmp_path / "cache"
    limit = big_bytes(moto) // 4
    pick = random.Random(2026)
    with FaultProxy(moto.port) as fast, FaultProxy(moto.port, trickle_seconds=0.2) as slow:
        started = time.monotonic()
        (tmp_path / "base").mkdir()
        check_epoch(
            run_ranks(*cache_limit_ranks(fast.endpoint, cache, limit), tmp_path / "base", TIMEOUT),
            BIG_SAMPLES,
        )
        normal = time.monotonic() - started
        for round_ in range(10):
            folder = tmp_path / f"round-{round_}"
            folder.mkdir()
            configs, envs = cache_limit_ranks(slow.endpoint, cache, limit, seed=round_)
            processes = []
            for k, (config, env) in enumerate(zip(configs, envs, strict=True)):
                config = {**config, "out": str(folder / f"killed-{k}.json")}
                processes.append(start_rank(config, env, folder / f"killed-{k}.log"))
            time.sleep(pick.uniform(1.5, 6.0))  # the ranks start (about 2 s), then read
            kind = ("worker", "rank", "downloader")[round_ % 3]
            if kind == "rank":
                victim = processes[pick.randrange(2)].pid
            else:
                workers = [pid for process in processes for pid in _family(process)]
                victim = pick.choice(workers) if workers else processes[0].pid
                if kind == "downloader":
                    victim = _downloader(cache, time.monotonic() + 5) or victim
            family = [pid for process in processes for pid in (process.pid, *_family(process))]
            signal_all([victim], signal.SIGKILL)  # (if the moment fell after its end, it is gone already)
            time.sleep(0.5)
            signal_all(family, signal.SIGKILL)  # the others too, rather than wait for them to finish
            for process in processes:
                process.wait(30)
            started = time.monotonic()
            reports = run_ranks(*cache_limit_ranks(fast.endpoint, cache, limit, seed=round_), folder, TIMEOUT)
            took = time.monotonic() - started
            check_epoch(reports, BIG_SAMPLES)
            assert took <= 3 * normal + 10, (
                f"round {round_} ({kind}): {took:.1f} s, a clean run {normal:.1f} s"
            )
            assert not [p for p in cache.rglob("*") if TEMP_NAME.match(p.name)], f"round {round_} ({kind})"
            assert shard_bytes(cache) <= limit


@pytest.mark.slow
def test_torchrun_two_nodes_of_two_ranks_stream_with_a_cache_limit(
    moto: ServerProcess, tmp_path: Path
) -> None:
    """``torchrun`` (static rendezvous on 127.0.0.1, gloo) as two nodes of two ranks with two workers each,
    each node its own cache folder limited to a quarter of the dataset, streaming shuffled from S3."""
    limit = big_bytes(moto) // 4
    port = free_port()
    caches = [tmp_path / f"node-{node}" for node in range(2)]
    script = Path(__file__).parent / "_dataset_rank.py"
    with FaultProxy(moto.port) as proxy, FolderSampler(*caches) as sampler:
        launched = []
        for node, cache in enumerate(caches):
            config = {
                "remote": f"s3://{BUCKET}/big",
                "local": str(cache),
                "batch_size": 8,
                "workers": 2,
                "mode": "torchrun",
                "check_values": True,
                "cache_limit": limit,
                "predownload": 2,
                "out": str(tmp_path / "report-{rank}.json"),
            }
            command = [
                sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "2",
                "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port),
                str(script), json.dumps(config),
            ]  # fmt: skip
            log = tmp_path / f"node-{node}.log"
            with open(log, "wb") as out:
                env = clean_env(S3_ENDPOINT_URL=proxy.endpoint, OMP_NUM_THREADS=1, **CREDENTIALS)
                launched.append(
                    (subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env), log)
                )
        deadline = time.monotonic() + TIMEOUT
        for process, _ in launched:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                dump_and_kill([p for p, _ in launched])
        logs = "\n".join(f"--- {log.name}:\n{log.read_text()[-4000:]}" for _, log in launched)
        assert [p.returncode for p, _ in launched] == [0, 0], logs
    reports = [json.loads((tmp_path / f"report-{rank}.json").read_text()) for rank in range(4)]
    assert [report["world"] for report in reports] == [[0, 4, 0, 2], [1, 4, 1, 2], [2, 4, 0, 2], [3, 4, 1, 2]]
    check_epoch(reports, BIG_SAMPLES)
    for cache in caches:
        assert 0 < sampler.peak[cache] <= limit
        assert list((cache / ".shardflow-cache").glob("*.evicted")), f"{cache}: nothing was evicted"
