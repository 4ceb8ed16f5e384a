"""webdataset: tars grouped by key, text and bytes columns, overrides, mismatched samples, truncated tars."""

from __future__ import annotations

import gzip
import io
import json
import logging
import random
import tarfile
from pathlib import Path

import pytest

from shardflow.convert import webdataset


def _tar(path: Path, keys: range, members: dict | None = None) -> list[dict]:
    """A WebDataset tar of samples with jpg, cls, json and txt members; returns the expected samples."""
    expected = []
    with tarfile.open(path, "w") as archive:
        for k in keys:
            sample = members or {
                "jpg": bytes([k % 256, 0xFF, 0xD8]) * (k % 9 + 1),
                "cls": str(k % 10),
                "json": json.dumps({"id": k, "w": "x" * (k % 4)}),
                "seg.png": b"\x89PNG" + bytes([k % 256]),
            }
            for extension, value in sample.items():
                data = value if isinstance(value, bytes) else value.encode()
                info = tarfile.TarInfo(f"shard/{k:06d}.{extension}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            expected.append(dict(sample))
    return expected


def test_round_trip_grouped_by_key(tmp_path: Path, reader, caplog) -> None:
    (tmp_path / "in").mkdir()
    expected = _tar(tmp_path / "in" / "a-000.tar", range(0, 40)) + _tar(
        tmp_path / "in" / "a-001.tar", range(40, 70)
    )
    with caplog.at_level(logging.INFO):
        assert webdataset.main([str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 0
    assert reader(tmp_path / "out") == expected
    size = (tmp_path / "in" / "a-001.tar").stat().st_size
    assert f"{tmp_path / 'in' / 'a-001.tar'}: 30 samples, {size:,} bytes" in caplog.text


def test_columns_override_and_workers(tmp_path: Path, reader) -> None:
    (tmp_path / "in").mkdir()
    expected = []
    for t in range(5):
        expected += _tar(tmp_path / "in" / f"s-{t:03d}.tar", range(t * 20, t * 20 + 20))
    argv = [str(tmp_path / "in"), "--columns", "cls:int,json:json"]
    assert webdataset.main([*argv, "--out", str(tmp_path / "one")]) == 0
    assert webdataset.main([*argv, "--out", str(tmp_path / "four"), "--workers", "4"]) == 0
    one = reader(tmp_path / "one")
    assert one == reader(tmp_path / "four")
    assert [(s["cls"], s["json"]) for s in one] == [(int(e["cls"]), json.loads(e["json"])) for e in expected]


def test_a_sample_with_other_members_names_tar_and_key(tmp_path: Path, cli) -> None:
    path = tmp_path / "a.tar"
    _tar(path, range(3))
    with tarfile.open(path, "a") as archive:
        info = tarfile.TarInfo("shard/000099.txt")
        info.size = 2
        archive.addfile(info, io.BytesIO(b"hi"))
    result = cli("webdataset", path, "--out", tmp_path / "out")
    assert result.returncode == 1 and f"{path}: sample 'shard/000099' has members ['txt']" in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_input_is_a_clear_error(tmp_path: Path, cli) -> None:
    result = cli("webdataset", tmp_path / "none.tar", "--out", tmp_path / "out")
    assert result.returncode == 1 and f"{tmp_path / 'none.tar'} does not exist" in result.stderr


@pytest.mark.parametrize("name", ["a.tar", "a.tar.gz"])
def test_a_truncated_tar_is_an_error_at_every_cut(tmp_path: Path, name: str, caplog) -> None:
    whole = tmp_path / "whole.tar"
    _tar(whole, range(30))
    with tarfile.open(whole) as archive:
        last = archive.getmembers()[-1]
    data = whole.read_bytes()
    if name.endswith(".gz"):
        data = gzip.compress(data)
        cuts = random.Random(name).sample(range(len(data)), 30)
    else:  # a cut after the data of the last member leaves the archive whole
        cuts = random.Random(name).sample(range(last.offset_data + last.size), 30)
    path = tmp_path / name
    for k, cut in enumerate(cuts):
        path.write_bytes(data[:cut])
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert webdataset.main([str(path), "--out", str(tmp_path / f"out{k}")]) == 1, f"cut at {cut}"
        assert f"webdataset: {path}" in caplog.text and not (tmp_path / f"out{k}").exists()
