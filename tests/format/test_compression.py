"""Compression: reference shards byte for byte, streamed files equal one shot, corrupt data is refused."""

from __future__ import annotations

import json
import struct
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardflow.format.compression import (
    compress,
    decompress,
    get_compression_extension,
    get_compressions,
    get_compressor,
    is_compression,
)
from shardflow.format.errors import MissingDependencyError, ShardFormatError, UnknownNameError
from shardflow.format.hashing import get_hash, hash_file

FAMILIES = {  # extension -> (levels, default level), as mosaicml-streaming defines them
    "br": (range(0, 12), 11),
    "bz2": (range(1, 10), 9),
    "gz": (range(0, 10), 9),
    "snappy": (range(0), None),
    "zstd": (range(1, 23), 3),
}
REFERENCE_SETS = ["br_4", "bz2", "gz_5", "snappy", "zstd", "zstd_7"]


def same_bytes(name: str, actual: bytes, expected: bytes) -> bool:
    """Equal bytes; for gzip, equal but for the header's mtime field (bytes 4-8), which holds the time."""
    if get_compression_extension(name) == "gz":
        return actual[:4] + actual[8:] == expected[:4] + expected[8:]
    return actual == expected


def gzip_mtime(data: bytes) -> int:
    return struct.unpack_from("<I", data, 4)[0]


def compressible(size: int, seed: int = 0) -> bytes:
    """Data that compresses about 2:1 (16 letters, random)."""
    return (np.random.default_rng(seed).integers(0, 16, size, dtype=np.uint8) + 97).tobytes()


# ---------------------------------------------------------------------------------------------- names


def test_names_are_every_family_and_level() -> None:
    expected = {ext for ext in FAMILIES} | {
        f"{ext}:{lvl}" for ext, (levels, _) in FAMILIES.items() for lvl in levels
    }
    assert get_compressions() == expected
    for name in expected:
        assert is_compression(name)
        compressor = get_compressor(name)
        assert compressor.name == name
        assert compressor.extension == name.split(":")[0] == get_compression_extension(name)
    for ext, (_, default) in FAMILIES.items():
        assert get_compressor(ext).level == default


@pytest.mark.parametrize(
    "name", ["lz4", "zstd:0", "zstd:23", "gz:10", "br:12", "bz2:0", "snappy:1", "", "ZSTD"]
)
def test_unknown_names_are_refused(name: str) -> None:
    assert not is_compression(name)
    with pytest.raises(UnknownNameError) as caught:
        get_compressor(name)
    message = str(caught.value)
    assert repr(name) in message
    assert all(ext in message for ext in FAMILIES)
    assert "zstd (levels 1-22, default 3)" in message
    with pytest.raises(UnknownNameError):
        compress(name, b"data")


def test_none_means_no_compression() -> None:
    assert not is_compression(None)
    assert compress(None, b"data") == b"data"
    assert decompress(None, memoryview(b"data")) == b"data"
    with pytest.raises(UnknownNameError):
        get_compressor(None)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ reference data


def reference_shards(fixtures_dir: Path) -> list[tuple[Path, dict]]:
    shards = []
    for family in REFERENCE_SETS:
        folder = fixtures_dir / "mds/compressed" / family
        for shard in json.loads((folder / "index.json").read_text())["shards"]:
            shards.append((folder, shard))
    return shards


def test_reference_shards_decompress_and_recompress_to_the_same_bytes(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    checked = 0
    for folder, shard in reference_shards(fixtures_dir):
        name = shard["compression"]
        compressor = get_compressor(name)
        zipped_path = folder / shard["zip_data"]["basename"]
        zipped = zipped_path.read_bytes()
        assert len(zipped) == shard["zip_data"]["bytes"]

        raw = compressor.decompress(zipped)
        assert len(raw) == shard["raw_data"]["bytes"]
        for algo, digest in shard["raw_data"]["hashes"].items():
            assert get_hash(algo, raw) == digest, f"{zipped_path}: {algo}"

        raw_path = tmp_path / shard["raw_data"]["basename"]
        assert compressor.decompress_file(zipped_path, raw_path) == len(raw)
        assert raw_path.read_bytes() == raw

        again_path = tmp_path / shard["zip_data"]["basename"]
        assert compressor.compress_file(raw_path, again_path) == len(zipped)
        assert same_bytes(name, compressor.compress(raw), zipped), zipped_path
        assert same_bytes(name, again_path.read_bytes(), zipped), zipped_path
        checked += 1
    assert checked == 24


def test_gzip_header_is_the_reference_header_with_the_current_time(fixtures_dir: Path) -> None:
    zipped = (fixtures_dir / "mds/compressed/gz_5/shard.00000.mds.gz").read_bytes()
    raw = decompress("gz:5", zipped)
    before = int(time.time())
    ours = compress("gz:5", raw)
    after = int(time.time())
    assert ours[:4] == zipped[:4] and ours[8:10] == zipped[8:10]  # magic, method, flags; XFL, OS
    assert before <= gzip_mtime(ours) <= after
    assert ours[10:] == zipped[10:]
    assert gzip_mtime(zipped) > 1_600_000_000  # the reference writes the time too


def test_reference_shards_hold_the_samples_of_the_uncompressed_twin(fixtures_dir: Path) -> None:
    """A compressed shard differs from its raw twin only in the config JSON after the offsets table."""
    twins = json.loads((fixtures_dir / "mds/uncompressed/index.json").read_text())["shards"]
    for folder, shard in reference_shards(fixtures_dir):
        raw = decompress(shard["compression"], (folder / shard["zip_data"]["basename"]).read_bytes())
        twin_entry = next(t for t in twins if t["raw_data"]["basename"] == shard["raw_data"]["basename"])
        twin = (fixtures_dir / "mds/uncompressed" / twin_entry["raw_data"]["basename"]).read_bytes()
        (count,) = struct.unpack_from("<I", raw)
        assert struct.unpack_from("<I", twin) == (count,) == (shard["samples"],)
        offsets = np.frombuffer(raw, np.uint32, count + 1, 4).astype(np.int64)
        twin_offsets = np.frombuffer(twin, np.uint32, count + 1, 4).astype(np.int64)
        assert np.all(offsets - twin_offsets == len(raw) - len(twin))
        assert raw[offsets[0] :] == twin[twin_offsets[0] :]
        config = json.loads(raw[4 * (count + 2) : offsets[0]])
        assert config["compression"] == shard["compression"]


# ------------------------------------------------------------------------------------- round trips

ALL_NAMES = sorted(get_compressions())
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.sampled_from(ALL_NAMES), st.binary(max_size=3000) | st.builds(compressible, st.integers(0, 5000)))
def test_roundtrip_in_memory(name: str, data: bytes) -> None:
    zipped = compress(name, data)
    assert decompress(name, zipped) == data
    assert decompress(name, memoryview(zipped)) == data
    assert same_bytes(name, compress(name, memoryview(data)), zipped)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(ALL_NAMES), data=st.binary(max_size=2000))
def test_roundtrip_through_files(tmp_path: Path, name: str, data: bytes) -> None:
    compressor = get_compressor(name)
    src, zipped, back = tmp_path / "raw", tmp_path / "raw.z", tmp_path / "back"
    src.write_bytes(data)
    compressor.compress_file(src, zipped)
    assert same_bytes(name, zipped.read_bytes(), compressor.compress(data))
    assert compressor.decompress_file(zipped, back) == len(data)
    assert back.read_bytes() == data


# Sizes that break naive chunking: exact multiples of zstd's 128 KiB block and of the 1 MiB read size,
# and more than zstd's level-3 window (2 MiB), where chunked zstd frames differ from one-shot ones.
@pytest.mark.parametrize("size", [1 << 17, 1 << 20, 2_500_001])
@pytest.mark.parametrize("name", ["zstd", "zstd:7", "gz", "gz:0", "gz:1", "bz2:1", "br:4", "br:0", "snappy"])
def test_large_files_compress_like_one_shot(tmp_path: Path, name: str, size: int) -> None:
    data = compressible(size, seed=size)
    src, dst = tmp_path / "raw", tmp_path / "zipped"
    src.write_bytes(data)
    compressor = get_compressor(name)
    compressor.compress_file(src, dst)
    zipped = dst.read_bytes()
    assert same_bytes(name, zipped, compressor.compress(data))
    assert compressor.decompress_file(dst, src) == size
    assert src.read_bytes() == data


@pytest.mark.parametrize("name", ["gz:1", "bz2:1", "zstd", "br:1"])
def test_streaming_uses_constant_memory(tmp_path: Path, name: str) -> None:
    """Peaks stay at a few MiB (read chunks, output pieces, codec windows), far below the file size."""
    size, bound = 16 << 20, 6 << 20
    src, zipped, back = tmp_path / "raw", tmp_path / "zipped", tmp_path / "back"
    src.write_bytes(compressible(size))
    compressor = get_compressor(name)
    streams_compression = name.startswith(("gz", "bz2"))
    tracemalloc.start()
    try:
        compressor.compress_file(src, zipped)
        compress_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        compressor.decompress_file(zipped, back)
        decompress_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert back.stat().st_size == size
    if streams_compression:
        assert compress_peak < bound, compress_peak
    assert decompress_peak < bound, decompress_peak


@pytest.mark.parametrize("name", ["zstd", "zstd:9", "br:1", "gz:0", "gz:6", "bz2:1", "snappy"])
def test_files_above_the_one_shot_size_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Past ONE_SHOT_MAX_BYTES, compressing maps one segment at a time (zstd: a frame per segment, each
    with its size, which one-shot decompressors need); snappy, which cannot stream, stays one shot."""
    monkeypatch.setattr("shardflow.format.compression.ONE_SHOT_MAX_BYTES", 1 << 16)
    monkeypatch.setattr("shardflow.format.compression._Zstandard.chunk", 1 << 14)
    data = compressible(100_000, seed=3)
    src, zipped, back = tmp_path / "raw", tmp_path / "zipped", tmp_path / "back"
    src.write_bytes(data)
    compressor = get_compressor(name)
    compressor.compress_file(src, zipped)
    assert compressor.decompress_file(zipped, back) == len(data) and back.read_bytes() == data
    assert compressor.decompress(zipped.read_bytes()) == data
    if name.startswith("zstd"):
        frames, rest = [], zipped.read_bytes()
        while rest:
            frames.append(zstandard.get_frame_parameters(rest).content_size)
            frame = zstandard.ZstdDecompressor().decompressobj()
            frame.decompress(rest)
            rest = frame.unused_data
        assert frames == [1 << 14] * 6 + [100_000 - 6 * (1 << 14)]
    if name.startswith(("gz:6", "bz2", "snappy")):  # these stream exactly, or do not stream at all
        assert same_bytes(name, zipped.read_bytes(), compressor.compress(data))


@pytest.mark.parametrize("name", ["zstd", "gz", "bz2"])
def test_concatenated_streams_decompress_whole(tmp_path: Path, name: str) -> None:
    """zstd frames, gzip members and bzip2 streams may be concatenated: all of them are read."""
    parts = [b"first part " * 50, b"", b"second part " * 70]
    zipped = b"".join(compress(name, part) for part in parts)
    assert decompress(name, zipped) == b"".join(parts)
    (tmp_path / "in").write_bytes(zipped)
    get_compressor(name).decompress_file(tmp_path / "in", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"".join(parts)


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("family", REFERENCE_SETS)
def test_truncated_or_corrupt_data_is_refused(fixtures_dir: Path, tmp_path: Path, family: str) -> None:
    folder = fixtures_dir / "mds/compressed" / family
    shard = json.loads((folder / "index.json").read_text())["shards"][0]
    name = shard["compression"]
    zipped = (folder / shard["zip_data"]["basename"]).read_bytes()
    garbage = np.random.default_rng(1).integers(0, 256, 400, dtype=np.uint8).tobytes()
    for bad in (zipped[: len(zipped) // 2], zipped[:-1], garbage, b""):
        with pytest.raises(ShardFormatError, match=f"cannot decompress the data with '{name}'"):
            decompress(name, bad)
        src = tmp_path / "bad"
        src.write_bytes(bad)
        with pytest.raises(ShardFormatError) as caught:
            get_compressor(name).decompress_file(src, tmp_path / "out")
        assert str(src) in str(caught.value)


def test_zipped_file_hashes_match_the_reference_index(fixtures_dir: Path) -> None:
    for folder, shard in reference_shards(fixtures_dir):
        for algo, digest in shard["zip_data"]["hashes"].items():
            assert hash_file(algo, folder / shard["zip_data"]["basename"]) == digest


@pytest.mark.parametrize(
    ("name", "module", "extra"), [("br:4", "brotli", "brotli"), ("snappy", "snappy", "snappy")]
)
def test_optional_codecs_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    assert is_compression(name)  # the name stays valid: only using it needs the extra
    hint = rf"pip install 'shardflow-format\[{extra}\]'"
    with pytest.raises(MissingDependencyError, match=hint):
        compress(name, b"data")
    with pytest.raises(MissingDependencyError, match=hint):
        decompress(name, b"data")
    (tmp_path / "in").write_bytes(b"data")
    with pytest.raises(MissingDependencyError, match=hint):
        get_compressor(name).decompress_file(tmp_path / "in", tmp_path / "out")
