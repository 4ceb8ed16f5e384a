"""Hashing: every name hashes as its library does (one shot, streamed, per file); fixture hashes verify."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from shardflow.format.errors import MissingDependencyError, UnknownNameError
from shardflow.format.hashing import get_hash, get_hashes, hash_file, hash_file_all, is_hash, new_hasher

XXHASH_NAMES = {"xxh32", "xxh64", "xxh3_64", "xxh3_128", "xxh128"}


def library_digest(name: str, data: bytes) -> str:
    """The digest straight from hashlib or xxhash, as mosaicml-streaming computes it."""
    if name in XXHASH_NAMES:
        return getattr(xxhash, name)(data).hexdigest()
    return getattr(hashlib, name)(data).hexdigest()


def test_names_are_hashlib_and_xxhash() -> None:
    names = get_hashes()
    assert isinstance(names, set)
    assert XXHASH_NAMES <= names
    assert {"md5", "sha1", "sha256", "sha512", "blake2b", "sha3_256"} <= names
    assert not any(name.startswith("shake_") for name in names)
    assert names - XXHASH_NAMES == {
        name
        for name in hashlib.algorithms_available
        if hasattr(hashlib, name) and not name.startswith("shake_")
    }
    assert all(is_hash(name) for name in names)


@pytest.mark.parametrize("name", ["sha", "SHA1", "shake_128", "xxh16", "", None])
def test_unknown_names_are_refused(name: str | None) -> None:
    assert not is_hash(name)
    with pytest.raises(UnknownNameError) as caught:
        get_hash(name, b"data")  # type: ignore[arg-type]
    message = str(caught.value)
    assert repr(name) in message
    assert all(valid in message for valid in get_hashes())


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(sorted(get_hashes())), st.lists(st.binary(max_size=200), max_size=5))
def test_one_shot_and_streaming_match_the_library(name: str, pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    expected = library_digest(name, data)
    assert get_hash(name, data) == expected
    assert get_hash(name, memoryview(data)) == expected
    hasher = new_hasher(name)
    for piece in pieces:
        hasher.update(piece)
    assert hasher.hexdigest() == expected


@pytest.mark.parametrize("name", ["sha1", "xxh3_64", "md5"])
@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, (1 << 20) + 7])
def test_hash_file_equals_hash_of_its_bytes(tmp_path: Path, name: str, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path = tmp_path / "data"
    path.write_bytes(data)
    assert hash_file(name, path) == hash_file(name, str(path)) == get_hash(name, data)


def test_fixture_index_hashes_verify(fixtures_dir: Path) -> None:
    checked = 0
    for index_path in sorted(fixtures_dir.rglob("index.json")):
        for shard in json.loads(index_path.read_text())["shards"]:
            for part in ("raw_data", "zip_data"):
                entry = shard.get(part)
                path = index_path.parent / entry["basename"] if entry else None
                if path is None or not path.is_file():
                    continue  # compressed datasets keep only zip_data: their raw hashes are checked elsewhere
                assert path.stat().st_size == entry["bytes"]
                for name, digest in entry["hashes"].items():
                    assert hash_file(name, path) == digest, f"{path}: {name}"
                    checked += 1
    assert checked >= 50


def test_xxhash_without_the_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "xxhash", None)
    assert is_hash("xxh64")  # still a valid name: only hashing needs the library
    with pytest.raises(MissingDependencyError, match=r"pip install 'shardflow-format\[xxhash\]'"):
        get_hash("xxh64", b"data")
    assert get_hash("sha1", b"data") == hashlib.sha1(b"data").hexdigest()


def test_hash_file_all_reads_once_for_every_algorithm(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    data = bytes(range(256)) * 9000  # several read chunks
    path.write_bytes(data)
    names = ["sha1", "md5", "xxh64", "xxh3_128"]
    assert hash_file_all(names, path) == {name: get_hash(name, data) for name in names}
    assert list(hash_file_all(names, path)) == names
    assert hash_file_all([], path) == {}
