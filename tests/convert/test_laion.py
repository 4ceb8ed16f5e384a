"""laion: img2dataset's output in each of its layouts (images in the Parquet file, in NNNNN.tar, in
NNNNN/) into the reference converter's columns, read back equal; 2 workers; --resume after kill -9."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from shardflow.convert import Options, laion
from shardflow.dataset import StreamingDataset

sys.path.insert(0, str(Path(__file__).parent))
from _vision_inputs import kill_midway, make_img2dataset, same_laion  # noqa: E402

pytest.importorskip("pyarrow")


def _read(out: Path) -> list[dict]:
    dataset = StreamingDataset(local=str(out))
    return [dataset[i] for i in range(len(dataset))]


def _same(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for k, (sample, want) in enumerate(zip(got, expected, strict=True)):
        assert same_laion(sample, want), (k, sample, want)


@pytest.mark.parametrize("output_format", ["parquet", "webdataset", "files"])
def test_each_layout_with_two_workers_reads_back_every_row(tmp_path: Path, cli, output_format: str) -> None:
    expected = make_img2dataset(tmp_path / "laion", shards=3, per_shard=20, output_format=output_format)
    out = tmp_path / "out"
    result = cli("laion", tmp_path / "laion", "--out", out, "--workers", "2", "--partitions", "4")
    assert result.returncode == 0, result.stderr
    shard = json.loads((out / "index.json").read_text())["shards"][0]
    assert dict(zip(shard["column_names"], shard["column_encodings"], strict=True)) == laion.COLUMNS
    _same(_read(out), expected)
    assert f"{tmp_path / 'laion' / '00002.parquet'}: 20 rows, 15 images" in result.stderr


def test_only_success_leaves_out_failed_downloads(tmp_path: Path) -> None:
    expected = make_img2dataset(tmp_path / "laion", shards=2, per_shard=8, output_format="webdataset")
    summary = laion.laion_to_mds([str(tmp_path / "laion")], Options(str(tmp_path / "out")), only_success=True)
    assert summary.samples == 12
    _same(_read(tmp_path / "out"), [s for s in expected if s["status"] == "success"])


def test_kill_then_resume_reads_back_every_row(tmp_path: Path, cli) -> None:
    expected = make_img2dataset(tmp_path / "laion", shards=10, per_shard=120, output_format="webdataset")
    out = tmp_path / "out"
    options = ["--workers", "2", "--partitions", "30", "--size-limit", "4kb"]  # partitions start inside tars
    finished = kill_midway("laion", [tmp_path / "laion", "--out", out, *options], out)
    stamps = {name: (out / name / "index.json").stat().st_mtime_ns for name in finished}

    result = cli("laion", tmp_path / "laion", "--out", out, "--resume", *options)
    assert result.returncode == 0, result.stderr
    assert f"{len(finished)} of 30 partitions are finished" in result.stderr
    assert {name: (out / name / "index.json").stat().st_mtime_ns for name in finished} == stamps
    _same(_read(out), expected)


def test_bad_input_is_named(tmp_path: Path, caplog) -> None:
    import pyarrow.parquet as pq

    folder = tmp_path / "laion"
    make_img2dataset(folder, shards=2, per_shard=6, output_format="files")
    with caplog.at_level(logging.ERROR):
        (folder / "00001" / "000010001.jpg").unlink()  # a downloaded row's image is gone
        assert laion.main([str(folder), "--out", str(tmp_path / "a")]) == 1
        assert (
            f"{folder / '00001.parquet'} row 1: key '000010001' is downloaded, but its image" in caplog.text
        )
        caplog.clear()
        (folder / "00001").rename(tmp_path / "aside")  # no images anywhere
        assert laion.main([str(folder), "--out", str(tmp_path / "b")]) == 1
        assert "00001.parquet has no jpg column, and neither" in caplog.text
        caplog.clear()
        table = pq.read_table(folder / "00000.parquet").drop_columns(["key"])
        pq.write_table(table, folder / "00000.parquet")
        assert laion.main([str(folder / "00000.parquet"), "--out", str(tmp_path / "c")]) == 1
        assert "lacks the column(s) ['key']: it is not a shard of img2dataset" in caplog.text
