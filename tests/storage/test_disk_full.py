"""A download onto a full disk: a real, small tmpfs, no mocks.

The error names the folder, the file being written and the bytes it needs, is not retried, and leaves
no temporary file. Mounting needs root (and a kernel that lets this container mount): elsewhere these
tests skip, saying so.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _storage_faults import FaultProxy
from _storage_targets import Target

from shardflow.storage import DiskFullError, StorageError, get_client

SMALL = 256 << 10  # bytes of the tmpfs
BIG = 1 << 20  # an object that does not fit


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a tmpfs of :data:`SMALL` bytes, unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root; run as root to test a full disk for real")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL}", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): no disk to fill")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _check(caught: DiskFullError, folder: Path, url: str) -> None:
    final = folder / "big.bin"
    message = str(caught)
    assert isinstance(caught, OSError) and isinstance(caught, StorageError)
    assert caught.errno == errno.ENOSPC
    assert caught.path == str(final) and caught.folder == str(folder) and caught.needed == BIG
    assert caught.url == url
    assert f"no space left on the device in {folder} " in message
    assert f"to {final} " in message and "1,048,576 bytes" in message and "Free space in" in message
    assert os.listdir(folder) == [], "no temporary file left behind"


def test_a_local_copy_onto_a_full_disk(small_disk: Path, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(BIG))
    folder = small_disk / "cache"
    with pytest.raises(DiskFullError) as caught:
        get_client(str(source)).download(str(source), folder / "big.bin")
    _check(caught.value, folder, str(source))


def test_an_s3_download_onto_a_full_disk_is_not_retried(
    small_disk: Path, s3_target: Target, tmp_path: Path
) -> None:
    url = f"{s3_target.fresh_prefix()}/big.bin"
    s3_target.client().put_bytes(url, os.urandom(BIG))
    folder = small_disk / "cache"
    with FaultProxy(s3_target.port) as proxy:  # type: ignore[arg-type]
        client = s3_target.client(proxy.endpoint, download_retry=5)
        with pytest.raises(DiskFullError) as caught:
            client.download(url, folder / "big.bin")
        requests = dict(proxy.requests)
    _check(caught.value, folder, url)
    key = url.removeprefix("s3://")
    assert requests == {("GET", f"/{key}"): 1, ("HEAD", f"/{key}"): 1}  # the download, then its size
