"""What the shared contract and fault tests cannot say about hf://, dbfs:/ and sftp://.

SFTP's failures are injected by its test server (the HTTP fault proxy cannot stand in front of SSH):
refused paths, connections dropped mid-read, stalled reads. The Hub's revisions, the ``dbfs:/`` form
of URLs, and refused credentials are checked against the loopback stand-ins.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from _storage_targets import Target

from shardflow.storage import (
    ObjectNotFoundError,
    PermissionDeniedError,
    StorageTimeoutError,
    get_client,
)
from shardflow.storage.registry import is_url, url_scheme

FAST = {"backoff": 0.02, "max_backoff": 0.2}


def test_dbfs_urls_have_their_scheme() -> None:
    assert url_scheme("dbfs:/Volumes/main/default/v/x.bin") == "dbfs"
    assert url_scheme("dbfs:/tmp/x.bin") == "dbfs"
    assert url_scheme("C:/data/x.bin") == "file"
    assert url_scheme("sftp://me@host/x") == "sftp" and url_scheme("hf://datasets/a/b/x") == "hf"


def test_dbfs_urls_are_urls_for_the_dataset_and_the_command() -> None:
    assert is_url("dbfs:/Volumes/main/default/v") and is_url("s3://b/x") and is_url("file:///tmp/x")
    assert not is_url("/tmp/dbfs:/x") and not is_url("C:/data") and not is_url("relative/path")
    from shardflow.dataset import Stream

    stream = Stream(remote="dbfs:/Volumes/main/default/v/data", local="/tmp/x", split="train")
    assert stream.remote_root == "dbfs:/Volumes/main/default/v/data/train"  # a URL, not os.path.join


# -- SFTP ------------------------------------------------------------------------------------------------


def _operations(server: Any, name: str) -> int:
    return sum(n for (_, path), n in server.operations.items() if path.endswith(name))


def test_sftp_missing_file_costs_one_request(sftp_target: Target, sftp_server: Any, tmp_path: Path) -> None:
    prefix = sftp_target.fresh_prefix()
    url = f"{prefix}/missing.bin"
    client = sftp_target.client(download_retry=5)
    with pytest.raises(ObjectNotFoundError, match="missing.bin.*does not exist"):
        client.download(url, tmp_path / "missing.bin")
    # This test's file only: the contract tests ask the same server for other folders' missing.bin.
    assert _operations(sftp_server, f"{prefix.rsplit('/', 1)[1]}/missing.bin") == 1
    assert os.listdir(tmp_path) == []


def test_sftp_refused_path_fails_at_once(sftp_target: Target, sftp_server: Any, tmp_path: Path) -> None:
    url = f"{sftp_target.fresh_prefix()}/denied-path.bin"
    sftp_server.deny.add("denied-path")
    client = sftp_target.client(download_retry=5, upload_retry=5)
    with pytest.raises(PermissionDeniedError, match="denied-path.bin.*refused.*credentials"):
        client.download(url, tmp_path / "x.bin")
    assert _operations(sftp_server, "denied-path.bin") == 1
    with pytest.raises(PermissionDeniedError):
        client.put_bytes(url, b"x")
    assert os.listdir(tmp_path) == []


def test_sftp_connection_dropped_mid_read_is_retried(
    sftp_target: Target, sftp_server: Any, tmp_path: Path
) -> None:
    url = f"{sftp_target.fresh_prefix()}/dropped.bin"
    data = os.urandom(3 << 20)
    client = sftp_target.client(download_retry=0, **FAST)
    client.put_bytes(url, data)
    sftp_server.drop.add("dropped.bin")
    assert client.download(url, tmp_path / "dropped.bin").read_bytes() == data
    assert "dropped.bin" not in sftp_server.drop  # the fault was served
    assert os.listdir(tmp_path) == ["dropped.bin"]


def test_sftp_stalled_read_ends_after_download_timeout(
    sftp_target: Target, sftp_server: Any, tmp_path: Path
) -> None:
    url = f"{sftp_target.fresh_prefix()}/stalled.bin"
    client = sftp_target.client(download_retry=1, download_timeout=0.5, **FAST)
    client.put_bytes(url, b"x" * 1000)
    sftp_server.stall.add("stalled.bin")
    sftp_server.stall_seconds = 3.0
    started = time.monotonic()
    with pytest.raises(StorageTimeoutError, match="stalled.bin.*download_timeout"):
        client.download(url, tmp_path / "stalled.bin")
    assert 1.0 <= time.monotonic() - started <= 2.5
    assert os.listdir(tmp_path) == []


def test_sftp_upload_goes_through_a_temporary_name(sftp_target: Target, sftp_server: Any) -> None:
    prefix = sftp_target.fresh_prefix()
    client = sftp_target.client()
    client.put_bytes(f"{prefix}/deep/file.bin", b"first")
    client.put_bytes(f"{prefix}/deep/file.bin", b"second")
    renames = [path for (operation, path) in sftp_server.operations if operation == "posix_rename"]
    assert any(path.endswith(".tmp") and "/deep/.file.bin." in path for path in renames)
    folder = sftp_server.local(prefix.split(str(sftp_server.port), 1)[1]) / "deep"
    assert os.listdir(folder) == ["file.bin"] and (folder / "file.bin").read_bytes() == b"second"


def test_sftp_unknown_host_and_wrong_key_are_refused(sftp_target: Target, tmp_path: Path) -> None:
    import paramiko

    url = f"{sftp_target.fresh_prefix()}/x.bin"
    options = sftp_target.options(download_retry=0)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(PermissionDeniedError, match="known_hosts"):
        get_client(url, **{**options, "known_hosts": str(empty)}).size(url)
    other = tmp_path / "other_key"
    paramiko.RSAKey.generate(2048).write_private_key_file(str(other))
    with pytest.raises(PermissionDeniedError, match="refused the credentials"):
        get_client(url, **{**options, "key_filename": str(other)}).size(url)


# -- the Hub ---------------------------------------------------------------------------------------------


def test_hub_reads_at_a_revision(hf_target: Target, hub_server: Any) -> None:
    client = hf_target.client()
    url = f"{hf_target.fresh_prefix()}/kept.bin"
    client.put_bytes(url, b"old bytes")
    repo = hf_target.root.split("/", 3)[3]
    commit = hub_server.branches[repo]["main"]
    client.put_bytes(url, b"new bytes!")
    pinned = url.replace(repo, f"{repo}@{commit}")
    assert client.get_bytes(pinned) == b"old bytes"
    assert client.get_bytes(url) == b"new bytes!"
    assert client.list(pinned.rsplit("/", 1)[0] + "/") == [pinned]
    with pytest.raises(ObjectNotFoundError, match="revision"):
        client.get_bytes(url.replace(repo, f"{repo}@no-such-branch"))


def test_hub_wrong_token_is_refused(hf_target: Target) -> None:
    url = f"{hf_target.fresh_prefix()}/x.bin"
    client = get_client(url, **hf_target.options(token="hf_wrong"))
    with pytest.raises(PermissionDeniedError, match="x.bin.*refused.*HF_TOKEN"):
        client.get_bytes(url)


def test_hub_rejects_other_repository_kinds(hf_target: Target) -> None:
    with pytest.raises(ValueError, match="only dataset repositories"):
        hf_target.client().get_bytes("hf://models/org/model/weights.bin")


# -- Databricks ------------------------------------------------------------------------------------------


def test_databricks_wrong_token_is_refused(volumes_target: Target) -> None:
    url = f"{volumes_target.fresh_prefix()}/x.bin"
    client = get_client(url, **{**volumes_target.options(), "token": "dapi-wrong"})
    with pytest.raises(PermissionDeniedError, match="x.bin.*refused.*DATABRICKS_TOKEN"):
        client.get_bytes(url)


def test_dbfs_large_upload_is_moved_into_place(dbfs_target: Target, databricks_server: Any) -> None:
    """Above 1 MiB, DBFS uploads stream to a hidden temporary file, then move it onto the target."""
    url = f"{dbfs_target.fresh_prefix()}/large.bin"
    data = os.urandom((2 << 20) + 5)
    client = dbfs_target.client()
    client.put_bytes(url, b"old")
    client.put_bytes(url, data)
    assert client.get_bytes(url) == data
    assert client.get_bytes(url, 1 << 20, (1 << 20) + 10) == data[1 << 20 : (1 << 20) + 10]
    folder = url.rsplit("/", 1)[0]
    assert client.list(folder + "/") == [url]
    assert [name for name in databricks_server.files if name.startswith(folder[len("dbfs:") :])] == [
        url[len("dbfs:") :]
    ]
