"""The client's behaviour apart from any one store: URLs, schemes, errors, retries, timeouts, imports.

Also pickling and forking clients, and the S3-interface route to GCS.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from _storage_targets import Target

import shardflow.storage as storage
from shardflow.storage import (
    Backend,
    MissingDependencyError,
    ObjectChangedError,
    ObjectNotFoundError,
    PermissionDeniedError,
    StorageError,
    StorageTimeoutError,
    TransientStorageError,
    UnsupportedURLError,
    from_url,
    get_client,
    register_backend,
)
from shardflow.storage.backend import ReadPin, Sink
from shardflow.storage.backends.local import LocalBackend

REPO = Path(__file__).resolve().parents[2]


# -- a scriptable in-memory backend, registered as mem:// ----------------------------------------------


class MemoryBackend(Backend):
    """Objects in a dict; ``script`` holds what the next calls raise (an exception) or do (``"stall"``)."""

    scheme = "mem"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.script: list[BaseException | str] = []
        self.calls = 0
        self.release = threading.Event()

    def _next(self) -> None:
        self.calls += 1
        if self.script:
            step = self.script.pop(0)
            if step == "stall":
                self.release.wait(30)
            elif isinstance(step, BaseException):
                raise step

    def read_into(self, url: str, sink: Sink, start: int = 0, end: int | None = None) -> int | None:
        self._next()
        data = self.objects[url][start:end]
        half = len(data) // 2
        sink.write(data[:half])
        self._next()
        sink.write(data[half:])
        return len(data)

    def write_from(self, url: str, source: BinaryIO, size: int) -> None:
        self._next()
        self.objects[url] = source.read()

    def size(self, url: str) -> int:
        self._next()
        return len(self.objects[url])

    def list(self, prefix: str, page_size: int | None = None) -> Iterator[str]:
        self._next()
        return iter([url for url in self.objects if url.startswith(prefix)])

    def delete(self, url: str) -> None:
        self._next()
        self.objects.pop(url, None)

    def translate(self, exc: BaseException, url: str) -> StorageError | None:
        if isinstance(exc, KeyError):
            return ObjectNotFoundError(f"{url} does not exist", url)
        return None


@pytest.fixture
def mem() -> Iterator[MemoryBackend]:
    backend = MemoryBackend()
    register_backend("mem", lambda: backend)
    yield backend
    backend.release.set()


def _mem_client(**options: object) -> storage.StorageClient:
    return storage.StorageClient(get_client("mem://x").backend, backoff=0.01, max_backoff=0.02, **options)  # type: ignore[arg-type]


# -- retries and timeouts -----------------------------------------------------------------------------


def test_transient_failures_are_retried_then_succeed(mem: MemoryBackend, tmp_path: Path) -> None:
    mem.objects["mem://b/k"] = b"payload"
    mem.script = [ConnectionResetError("reset"), TimeoutError("slow"), ConnectionRefusedError("refused")]
    client = _mem_client(download_retry=3)
    assert client.download("mem://b/k", tmp_path / "k") == tmp_path / "k"
    assert (tmp_path / "k").read_bytes() == b"payload"
    assert os.listdir(tmp_path) == ["k"]


def test_without_a_timeout_each_attempt_is_one_try(mem: MemoryBackend, tmp_path: Path) -> None:
    mem.objects["mem://b/k"] = b"payload"
    mem.script = [ConnectionResetError("reset")] * 10
    client = _mem_client(download_retry=2, download_timeout=None)
    with pytest.raises(TransientStorageError, match=r"mem://b/k failed 3 time.*download_retry \(now 2\)"):
        client.download("mem://b/k", tmp_path / "k")
    assert mem.calls == 3
    assert os.listdir(tmp_path) == []


def test_one_attempt_retries_while_its_timeout_lasts(mem: MemoryBackend, tmp_path: Path) -> None:
    """download_retry=0 still survives a run of transient failures that fits in download_timeout."""
    mem.objects["mem://b/k"] = b"payload"
    mem.script = [ConnectionResetError("reset")] * 6
    client = _mem_client(download_retry=0, download_timeout=5)
    assert client.download("mem://b/k", tmp_path / "k").read_bytes() == b"payload"
    assert mem.calls == 6 + 2  # six failed tries, then both halves of the good one
    mem.script = [ConnectionResetError("reset")] * 4
    assert client.size("mem://b/k") == 7 and client.stat("mem://b/k") == storage.ObjectStat(7, None)


def test_attempts_that_keep_failing_end_within_the_bound(mem: MemoryBackend, tmp_path: Path) -> None:
    """(download_retry + 1) attempts of download_timeout each, plus the delays between attempts."""
    mem.objects["mem://b/k"] = b"payload"
    mem.script = [ConnectionResetError("reset")] * 10_000
    client = _mem_client(download_retry=2, download_timeout=0.3)  # max_backoff 0.02
    started = time.monotonic()
    with pytest.raises(
        TransientStorageError, match=r"mem://b/k failed 3 time.*download_retry \(now 2\) or download_timeout"
    ):
        client.download("mem://b/k", tmp_path / "k")
    assert 0.3 * 2 < time.monotonic() - started <= 3 * 0.3 + 2 * 0.02 + 0.3
    assert mem.calls > 3 * 5  # each attempt tried again and again
    assert os.listdir(tmp_path) == []


class ResumingMemory(MemoryBackend):
    """A MemoryBackend whose reads resume: pinned to a version that each write changes."""

    resumes = True

    def __init__(self) -> None:
        super().__init__()
        self.versions: dict[str, int] = {}
        self.reads: list[tuple[int, int | None]] = []  # (start, the pinned version)

    def _next(self) -> None:
        if self.script[:1] == ["rewrite"]:
            self.script.pop(0)
            self.put("mem://b/k", b"new-new-new!")
            raise ConnectionResetError("cut")
        super()._next()

    def put(self, url: str, data: bytes) -> None:
        self.objects[url] = data
        self.versions[url] = self.versions.get(url, 0) + 1

    def read_into(
        self, url: str, sink: Sink, start: int = 0, end: int | None = None, pin: ReadPin | None = None
    ) -> int | None:
        assert pin is not None
        self.reads.append((start, None if pin.version is None else int(pin.version)))
        if pin.version is not None and int(pin.version) != self.versions[url]:
            raise ObjectChangedError(f"{url} changed", url)
        pin.version = str(self.versions[url])
        return super().read_into(url, sink, start, end)


def test_a_body_cut_short_is_continued_from_the_bytes_received(tmp_path: Path) -> None:
    backend = ResumingMemory()
    backend.put("mem://b/k", b"0123456789")
    backend.script = ["ok", ConnectionResetError("cut after half the body")]
    client = storage.StorageClient(backend, download_retry=0, backoff=0.01)
    assert client.download("mem://b/k", tmp_path / "k").read_bytes() == b"0123456789"
    assert backend.reads == [(0, None), (5, 1)]  # the rest, pinned to the version of the first answer
    backend.reads.clear()
    backend.script = ["ok", ConnectionResetError("cut")]
    assert client.get_bytes("mem://b/k", 2, 8) == b"234567"
    assert backend.reads == [(2, None), (5, 1)]


def test_an_object_rewritten_before_the_rest_is_read_is_read_again_whole(tmp_path: Path) -> None:
    backend = ResumingMemory()
    backend.put("mem://b/k", b"old-old-old!")
    backend.script = ["ok", "rewrite"]  # half the body, then a writer replaces it and the answer breaks
    client = storage.StorageClient(backend, download_retry=0, backoff=0.01)
    assert client.download("mem://b/k", tmp_path / "k").read_bytes() == b"new-new-new!"
    assert backend.reads == [(0, None), (6, 1), (0, None)]  # refused (version 1 is gone): start over
    assert os.listdir(tmp_path) == ["k"]


def test_not_found_and_unknown_errors_are_not_retried(mem: MemoryBackend, tmp_path: Path) -> None:
    client = _mem_client(download_retry=5)
    with pytest.raises(ObjectNotFoundError):
        client.get_bytes("mem://b/missing")
    assert mem.calls == 1
    mem.objects["mem://b/k"] = b"x"
    mem.script = [RuntimeError("a bug, not a network failure")]
    with pytest.raises(RuntimeError, match="a bug"):
        client.get_bytes("mem://b/k")
    assert mem.calls == 2


def test_a_short_body_is_retried(mem: MemoryBackend) -> None:
    class Short(MemoryBackend):
        def read_into(self, url: str, sink: Sink, start: int = 0, end: int | None = None) -> int | None:
            announced = super().read_into(url, sink, start, end)
            return None if announced is None else announced + (1 if self.calls < 4 else 0)

    short = Short()
    short.objects["mem://b/k"] = b"0123456789"
    client = storage.StorageClient(short, download_retry=1, backoff=0.01)
    assert client.get_bytes("mem://b/k") == b"0123456789"
    short.calls = 0
    with pytest.raises(TransientStorageError, match="cut short: 10 bytes received, 11 announced"):
        storage.StorageClient(short, download_retry=0, download_timeout=None).get_bytes("mem://b/k")


def test_the_timeout_fires_inside_a_stalled_transfer(mem: MemoryBackend, tmp_path: Path) -> None:
    mem.objects["mem://b/k"] = b"0123456789"
    mem.script = ["ok", "stall"]  # the attempt stalls after writing half of the bytes
    client = _mem_client(download_retry=0, download_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(StorageTimeoutError, match=r"mem://b/k.*within 0.3 s.*download_timeout") as caught:
        client.download("mem://b/k", tmp_path / "k")
    assert 0.3 <= time.monotonic() - started < 1.0
    assert caught.value.url == "mem://b/k"
    assert os.listdir(tmp_path) == []  # the abandoned attempt's temporary file is gone already
    mem.release.set()


def test_an_abandoned_attempt_never_publishes_its_file(mem: MemoryBackend, tmp_path: Path) -> None:
    mem.objects["mem://b/k"] = b"0123456789"
    mem.script = ["ok", "stall"]
    client = _mem_client(download_retry=0, download_timeout=0.2)
    with pytest.raises(StorageTimeoutError):
        client.download("mem://b/k", tmp_path / "k")
    mem.release.set()  # the worker now finishes its transfer...
    time.sleep(0.3)
    assert os.listdir(tmp_path) == []  # ...and finds it was abandoned: no rename


def test_policy_arguments_are_checked() -> None:
    backend = LocalBackend()
    with pytest.raises(ValueError, match="download_retry must be 0 or more"):
        storage.StorageClient(backend, download_retry=-1)
    with pytest.raises(ValueError, match="upload_timeout must be positive"):
        storage.StorageClient(backend, upload_timeout=0)


# -- schemes, URLs and the registry -------------------------------------------------------------------


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(
        UnsupportedURLError, match=r"no storage backend serves nope://.*s3.*shardflow.storage"
    ):
        get_client("nope://bucket/key")
    assert {"file", "s3", "gs", "azure", "oci"} <= set(storage.known_schemes())


@pytest.mark.parametrize(
    "url, message",
    [
        ("s3:///key", "names no bucket"),
        ("s3://bucket/", "names no object"),
        ("gs://bucket/dir/", "names no object"),
        (
            "azure://account.blob.core.windows.net/container/blob",
            "azure://<container>/<blob> for reads and writes",
        ),
        ("oci://@ns/key", "names no bucket"),
    ],
)
def test_malformed_urls_are_refused_at_once(url: str, message: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AZURE_ACCOUNT_NAME", "devstoreaccount1")
    client = get_client(url, download_retry=5)
    with pytest.raises(UnsupportedURLError, match=message) as caught:
        client.download(url, tmp_path / "x")
    assert isinstance(caught.value, ValueError)


def test_file_urls(tmp_path: Path) -> None:
    client = get_client("file:///")
    root = f"file://{tmp_path}"
    client.put_bytes(f"{root}/a/b.bin", b"ab")
    (tmp_path / "a" / ".b.bin.123-0123abcd.tmp").write_bytes(b"in progress")  # someone's temp file
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"ab"
    assert client.list(f"{root}/") == [f"{root}/a/b.bin"]
    assert get_client(str(tmp_path)).list(f"{tmp_path}/a") == [f"{tmp_path}/a/b.bin"]
    with pytest.raises(UnsupportedURLError, match="must be local"):
        client.get_bytes("file://otherhost/x")


def test_store_names_stay_below_the_root(tmp_path: Path) -> None:
    store = from_url(str(tmp_path / "root"))
    assert store.url("a/b") == f"{tmp_path}/root/a/b"
    for bad in ("../escape", "a/../../b", "/absolute"):
        with pytest.raises(ValueError, match="relative"):
            store.url(bad)


def test_clients_are_shared_and_follow_the_environment(monkeypatch) -> None:
    first = get_client("s3://b", endpoint_url="http://127.0.0.1:1")
    assert get_client("s3://other", endpoint_url="http://127.0.0.1:1") is first
    assert get_client("s3://b", endpoint_url="http://127.0.0.1:2") is not first
    plain = get_client("s3://b")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:3")
    moved = get_client("s3://b")
    assert moved is not plain
    assert moved.backend.endpoint_url == "http://127.0.0.1:3"  # type: ignore[attr-defined]


def test_entry_point_schemes(tmp_path: Path) -> None:
    """A scheme registered by another installed distribution's entry point, in a fresh interpreter."""
    (tmp_path / "fakefs_backend.py").write_text(
        textwrap.dedent("""
        from shardflow.storage.backends.local import LocalBackend

        class FakeBackend(LocalBackend):
            scheme = "fakefs"

            @staticmethod
            def path(url):
                return LocalBackend.path(url.replace("fakefs://", "", 1))

            def join(self, prefix, name):
                return prefix.rstrip("/") + "/" + name

        def make(**options):
            return FakeBackend()
    """)
    )
    dist = tmp_path / "fakefs-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakefs\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[shardflow.storage.backends]\nfakefs = fakefs_backend:make\n")
    script = f"""
import shardflow.storage as s
assert "fakefs" in s.known_schemes()
c = s.get_client("fakefs://x")
c.put_bytes("fakefs://{tmp_path}/data/one", b"1")
print(c.get_bytes("fakefs://{tmp_path}/data/one").decode(), type(c.backend).__name__)
"""
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "FakeBackend"]


# -- errors, dependencies, imports --------------------------------------------------------------------


def test_error_classes_are_builtins_too() -> None:
    assert issubclass(ObjectNotFoundError, FileNotFoundError)
    assert issubclass(PermissionDeniedError, PermissionError)
    assert issubclass(TransientStorageError, ConnectionError)
    assert issubclass(StorageTimeoutError, TimeoutError) and issubclass(
        StorageTimeoutError, TransientStorageError
    )
    assert issubclass(MissingDependencyError, ImportError)
    assert issubclass(UnsupportedURLError, ValueError)
    error = pickle.loads(pickle.dumps(StorageTimeoutError("took too long", "s3://b/k")))
    assert (type(error), str(error), error.url) == (StorageTimeoutError, "took too long", "s3://b/k")


@pytest.mark.parametrize(
    "url, module, extra",
    [
        ("s3://b/k", "boto3", "s3"),
        ("gs://b/k", "google.cloud.storage", "gcs"),
        ("azure://c/k", "azure.storage.blob", "azure"),
        ("oci://b@ns/k", "oci", "oci"),
    ],
)
def test_a_missing_sdk_names_the_extra(url: str, module: str, extra: str, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    monkeypatch.setenv("AZURE_ACCOUNT_NAME", "devstoreaccount1")
    monkeypatch.delenv("GCS_KEY", raising=False)
    with pytest.raises(
        MissingDependencyError, match=rf"pip install 'shardflow-storage\[{extra}\]'"
    ) as caught:
        get_client(url, read_timeout=12.5)  # options no other test uses: a new client, not a shared one
    assert isinstance(caught.value, ImportError)


def test_importing_loads_no_sdk_and_no_sibling() -> None:
    script = (
        "import sys, shardflow.storage\n"
        "heavy = {'boto3', 'botocore', 'google', 'azure', 'oci', 'torch', 'numpy', 'requests', 'urllib3'}\n"
        "loaded = sorted(heavy & {name.split('.')[0] for name in sys.modules})\n"
        "loaded += [name for name in sys.modules if name.startswith('shardflow.format')]\n"
        "print(loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_namespace_stays_open() -> None:
    assert not (REPO / "packages" / "storage" / "src" / "shardflow" / "__init__.py").exists()
    assert storage.__version__ == "0.1.0"


# -- clients across processes -------------------------------------------------------------------------


def test_a_client_pickles_and_works_in_a_forked_child(s3_target: Target, tmp_path: Path) -> None:
    client = s3_target.client()
    url = f"{s3_target.fresh_prefix()}/fork.bin"
    client.put_bytes(url, b"from the parent")
    copy = pickle.loads(pickle.dumps(client))
    assert copy.get_bytes(url) == b"from the parent"
    child = multiprocessing.get_context("fork").Process(target=client.download, args=(url, tmp_path / "f"))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert (tmp_path / "f").read_bytes() == b"from the parent"
    assert client.get_bytes(url) == b"from the parent"  # the parent's connection pool is intact


def test_gcs_through_the_s3_interface_with_hmac_keys(s3_target: Target, monkeypatch) -> None:
    """GCS_KEY/GCS_SECRET route gs:// through boto3 (as mosaicml-streaming does); moto stands in for GCS."""
    monkeypatch.setenv("GCS_KEY", "test")
    monkeypatch.setenv("GCS_SECRET", "test")
    client = get_client("gs://", endpoint_url=s3_target.options()["endpoint_url"])
    assert type(client.backend).__name__ == "S3Backend" and client.scheme == "gs"
    prefix = f"gs://shardflow-test/{os.urandom(4).hex()}"
    client.put_bytes(f"{prefix}/hmac.bin", b"interop")
    assert client.list(f"{prefix}/") == [f"{prefix}/hmac.bin"]
    assert (
        s3_target.client().get_bytes(f"s3://shardflow-test/{prefix[len('gs://shardflow-test/') :]}/hmac.bin")
        == b"interop"
    )
