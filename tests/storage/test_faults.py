"""Faults injected by a loopback proxy in front of the real servers, on every backend.

5xx, throttling, resets, short bodies and stalls are retried within bounds; 404 and 403 fail at once;
no partial file ever appears at a final path.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _storage_faults import FaultProxy
from _storage_targets import Target

from shardflow.storage import (
    ObjectNotFoundError,
    PermissionDeniedError,
    StorageError,
    StorageTimeoutError,
    TransientStorageError,
    backend,
    get_client,
)
from shardflow.storage.backend import WholeObjectSlice

# Quick retries: the bars are about outcomes, not about waiting.
FAST = {"backoff": 0.02, "max_backoff": 0.2}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _populate(target: Target, prefix: str, count: int, rng: random.Random) -> dict[str, bytes]:
    """``count`` objects of 1 byte to 256 KiB, written straight to the server (no proxy)."""
    objects = {
        f"{prefix}/obj-{i:04d}.bin": rng.randbytes(rng.choice([1, 1000, 64 << 10, 256 << 10]))
        for i in range(count)
    }
    client = target.client()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: client.put_bytes(*item), objects.items()))
    return objects


class _PartialFileWatch:
    """Polls the final paths during a run: any file there must already be complete and correct."""

    def __init__(self, expected: dict[Path, str]) -> None:
        self.expected = expected
        self.checked = 0
        self.bad: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _PartialFileWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for path, digest in self.expected.items():
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue
                self.checked += 1
                if _sha(data) != digest:
                    self.bad.append(f"{path}: {len(data)} bytes, not the expected content")


def _run_under_faults(
    target: Target, tmp_path: Path, downloads: int, uploads: int, *, faults: tuple[str, ...], seed: int
) -> FaultProxy:
    """Download ``downloads`` and upload ``uploads`` objects through a proxy failing 30% of requests."""
    rng = random.Random(seed)
    prefix = target.fresh_prefix()
    objects = _populate(target, prefix, downloads, rng)
    sources = {}
    for i in range(uploads):
        path = tmp_path / "up" / f"up-{i:03d}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(rng.randbytes(rng.choice([1, 1000, 64 << 10, 256 << 10])))
        sources[path] = f"{prefix}/uploaded/up-{i:03d}.bin"
    dests = {url: tmp_path / "down" / url.rsplit("/", 1)[1] for url in objects}
    with FaultProxy(target.port, rate=0.3, faults=faults, stall_seconds=3.0, seed=seed) as proxy:  # type: ignore
        client = target.client(
            proxy.endpoint,
            download_retry=25,
            upload_retry=25,
            download_timeout=1.0,
            upload_timeout=1.0,
            **FAST,
        )
        expected = {dests[url]: _sha(data) for url, data in objects.items()}
        with _PartialFileWatch(expected) as watch, ThreadPoolExecutor(8) as pool:
            done = list(pool.map(lambda url: client.download(url, dests[url]), objects))
            list(pool.map(lambda item: client.upload(*item), sources.items()))
        assert done == [dests[url] for url in objects]
        assert watch.bad == []
    for url, data in objects.items():
        assert _sha(dests[url].read_bytes()) == _sha(data), url
    assert sorted(os.listdir(tmp_path / "down")) == sorted(path.name for path in dests.values())
    direct = target.client()
    for path, url in sources.items():
        assert _sha(direct.get_bytes(url)) == _sha(path.read_bytes()), url
    return proxy


@pytest.mark.slow
def test_s3_bar_200_downloads_50_uploads_at_30_percent_faults(s3_target: Target, tmp_path: Path) -> None:
    proxy = _run_under_faults(
        s3_target, tmp_path, 200, 50, faults=("500", "503", "reset", "truncate", "stall"), seed=3
    )
    assert set(proxy.injected) == {"500", "503", "reset", "truncate", "stall"}
    assert sum(proxy.injected.values()) >= 0.2 * proxy.total_requests


def test_every_backend_survives_30_percent_faults(remote_target: Target, tmp_path: Path) -> None:
    proxy = _run_under_faults(
        remote_target, tmp_path, 30, 10, faults=("500", "503", "429", "reset", "truncate"), seed=11
    )
    assert sum(proxy.injected.values()) > 5


def test_404_costs_one_request(remote_target: Target, tmp_path: Path) -> None:
    url = f"{remote_target.fresh_prefix()}/missing.bin"
    with FaultProxy(remote_target.port) as proxy:  # type: ignore[arg-type]
        client = remote_target.client(proxy.endpoint, download_retry=5)
        with pytest.raises(ObjectNotFoundError, match="missing.bin.*does not exist.*check"):
            client.download(url, tmp_path / "missing.bin")
        assert proxy.store_requests == 1, proxy.requests
        with pytest.raises(ObjectNotFoundError):
            client.size(url)
        assert proxy.store_requests == 2, proxy.requests
    assert os.listdir(tmp_path) == []


def test_403_fails_at_once_and_says_what_to_check(remote_target: Target, tmp_path: Path) -> None:
    url = f"{remote_target.fresh_prefix()}/denied.bin"
    with FaultProxy(remote_target.port, rate=1.0, faults=("403",)) as proxy:  # type: ignore[arg-type]
        client = remote_target.client(proxy.endpoint, download_retry=5)
        with pytest.raises(PermissionDeniedError, match="denied.bin.*refused.*credentials") as caught:
            client.download(url, tmp_path / "denied.bin")
        assert isinstance(caught.value, PermissionError)
        assert proxy.store_requests == 1
    assert os.listdir(tmp_path) == []


def test_retries_are_bounded_and_the_error_names_the_knob(remote_target: Target, tmp_path: Path) -> None:
    """A store that answers 503 to everything: each attempt keeps trying for download_timeout, then the
    next attempt starts; after download_retry + 1 attempts the error names both knobs."""
    url = f"{remote_target.fresh_prefix()}/busy.bin"
    timeout, retries = 0.4, 2
    with FaultProxy(remote_target.port, rate=1.0, faults=("503",)) as proxy:  # type: ignore[arg-type]
        client = remote_target.client(
            proxy.endpoint, download_retry=retries, download_timeout=timeout, **FAST
        )
        started = time.monotonic()
        with pytest.raises(
            TransientStorageError, match="busy.bin.*failed 3 time.*download_retry.*download_timeout"
        ) as caught:
            client.download(url, tmp_path / "busy.bin")
        elapsed = time.monotonic() - started
        assert isinstance(caught.value, ConnectionError)
        assert proxy.total_requests > retries + 1  # each attempt tried more than once
        assert elapsed <= (retries + 1) * timeout + retries * FAST["max_backoff"] + 1.0
    assert os.listdir(tmp_path) == []


# Bytes a proxy sends when the first answer of a 4 MiB download is cut after half its body: the rest for a
# backend that continues the read, the whole object again for one that starts over (GCS; Azure's SDK
# reads objects of up to 32 MiB in its first request, which a cut fails as a whole).
RESENT = {"s3": 0.5, "oci": 0.5, "gcs": 1.0, "azure": 1.0, "hf": 1.0, "volumes": 1.0}


def test_a_body_cut_short_is_continued_where_the_backend_resumes(
    remote_target: Target, tmp_path: Path
) -> None:
    if remote_target.name == "dbfs":
        pytest.skip(
            "the DBFS API reads 1 MiB per JSON call: a cut answer fails to parse and the read starts over"
        )
    url = f"{remote_target.fresh_prefix()}/cut.bin"
    data = random.Random(8).randbytes(4 << 20)
    remote_target.client().put_bytes(url, data)
    with FaultProxy(remote_target.port, first=("truncate",), only="cut.bin") as proxy:  # type: ignore[arg-type]
        client = remote_target.client(proxy.endpoint, download_retry=0, **FAST)
        assert _sha(client.download(url, tmp_path / "cut.bin").read_bytes()) == _sha(data)
        sent = sum(n for (method, path), n in proxy.sent_bytes.items() if method == "GET")
    assert proxy.injected == {"truncate": 1}
    expected = (0.5 + RESENT[remote_target.name]) * len(data)  # the cut half, then the rest or all
    assert expected - backend.CHUNK_SIZE <= sent <= expected + backend.CHUNK_SIZE, sent
    assert os.listdir(tmp_path) == ["cut.bin"]


def test_a_stalled_download_ends_after_download_timeout(remote_target: Target, tmp_path: Path) -> None:
    url = f"{remote_target.fresh_prefix()}/stalled.bin"
    remote_target.client().put_bytes(url, b"x" * 1000)
    timeout, retries = 0.5, 1
    with FaultProxy(remote_target.port, rate=1.0, faults=("stall",), stall_seconds=30) as proxy:  # type: ignore
        client = remote_target.client(
            proxy.endpoint, download_retry=retries, download_timeout=timeout, **FAST
        )
        started = time.monotonic()
        with pytest.raises(StorageTimeoutError, match="stalled.bin.*download_timeout") as caught:
            client.download(url, tmp_path / "stalled.bin")
        elapsed = time.monotonic() - started
        assert isinstance(caught.value, TimeoutError)
        # (retries + 1) attempts of `timeout` each, plus at most `retries` backoff delays, plus slack.
        assert (retries + 1) * timeout <= elapsed <= (retries + 1) * timeout + retries * 0.2 + 1.0
        assert os.listdir(tmp_path) == []


def test_a_stalled_upload_ends_after_upload_timeout(remote_target: Target, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"y" * 1000)
    with FaultProxy(remote_target.port, rate=1.0, faults=("stall",), stall_seconds=30) as proxy:  # type: ignore
        client = remote_target.client(proxy.endpoint, upload_retry=0, upload_timeout=0.5, **FAST)
        started = time.monotonic()
        with pytest.raises(StorageTimeoutError, match="upload_timeout"):
            client.upload(source, f"{remote_target.fresh_prefix()}/stalled.bin")
        assert 0.5 <= time.monotonic() - started <= 1.5


RANGES = [(10, 20), (0, 5), (99_990, None), (99_990, 200_000), (200_000, None), (200_000, 200_010)]


def _sas_options(target: Target, endpoint: str) -> dict[str, object]:
    """Azure client options signed by an account SAS: a proxy may then drop headers without breaking it."""
    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    connection = str(target.options()["connection_string"])
    fields = dict(part.split("=", 1) for part in connection.split(";") if part)
    sas = generate_account_sas(
        fields["AccountName"],
        fields["AccountKey"],
        ResourceTypes(container=True, object=True),
        AccountSasPermissions(read=True, list=True),
        expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
    )
    blob_endpoint = f"{endpoint}/{fields['AccountName']}"
    return {"connection_string": f"BlobEndpoint={blob_endpoint};SharedAccessSignature={sas}"}


@pytest.mark.parametrize(("start", "end"), RANGES)
def test_a_range_ignored_on_the_way_reads_only_the_bytes_asked_for(
    remote_target: Target,
    start: int,
    end: int | None,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A proxy that drops Range makes the server send the whole object: still exactly ``[start, end)``.

    azure-storage-blob reads every blob by ranges and refuses whole-object answers: a clear error instead.
    """
    if remote_target.name == "dbfs":
        pytest.skip("the DBFS API reads by offset and length parameters, not by Range headers")
    url = f"{remote_target.fresh_prefix()}/whole.bin"
    data = random.Random(5).randbytes(100_000)
    remote_target.client().put_bytes(url, data)
    with FaultProxy(remote_target.port, ignore_range=True) as proxy:  # type: ignore[arg-type]
        if remote_target.name == "azure":
            client = get_client(url, download_retry=3, **_sas_options(remote_target, proxy.endpoint))
            with pytest.raises(StorageError, match="whole.bin.*no Content-Range.*ignores the x-ms-range"):
                client.get_bytes(url, start, end)
            assert proxy.total_requests == 1  # not retried
            return
        client = remote_target.client(proxy.endpoint, download_retry=0)
        monkeypatch.setattr(backend, "_warned", set())  # warned once per bucket and process: forget it
        with caplog.at_level(logging.WARNING, "shardflow.storage"):
            assert client.get_bytes(url, start, end) == data[start:end]
        assert client.get_bytes(url) == data
    assert "ignores Range headers" in caplog.text


def test_a_range_through_a_sas_proxy_that_passes_ranges(azure_target: Target) -> None:
    """The SAS set-up of the test above reads ranges when the proxy passes them (the control case)."""
    url = f"{azure_target.fresh_prefix()}/ranged.bin"
    data = random.Random(6).randbytes(100_000)
    azure_target.client().put_bytes(url, data)
    with FaultProxy(azure_target.port) as proxy:  # type: ignore[arg-type]
        client = get_client(url, **_sas_options(azure_target, proxy.endpoint))
        assert client.get_bytes(url, 10, 20) == data[10:20]


def test_a_whole_object_slice_reads_no_further_than_the_range() -> None:
    """The bound: a whole-object body is read only up to the end of the range asked for."""
    body = io.BytesIO(bytes(range(256)) * 40)
    out = io.BytesIO()
    whole = WholeObjectSlice(out, 1000, 1010, 10_240, "s3://bucket/x")
    while not whole.done and (chunk := body.read(64)):
        whole.write(chunk)
    assert out.getvalue() == (bytes(range(256)) * 40)[1000:1010]
    assert body.tell() == 1024 and whole.expected == 10
    past = WholeObjectSlice(io.BytesIO(), 20_000, None, 10_240, "s3://bucket/x")
    assert past.done and past.expected == 0
