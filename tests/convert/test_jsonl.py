"""jsonl: plain, gzip, bzip2 and zstd files, --columns, --map, malformed lines, workers, --skip-bad,
truncated and corrupt compressed files, the per-file summary."""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import random
from pathlib import Path

import pytest
import zstandard

from shardflow.convert import jsonl


def _records(count: int, start: int = 0) -> list[dict]:
    return [
        {"content": f"doc {k} é \n" + "x" * (k % 50), "id": k, "score": k / 7, "meta": {"k": [k]}}
        for k in range(start, start + count)
    ]


_COMPRESS = {"gz": gzip.compress, "bz2": bz2.compress, "zst": zstandard.ZstdCompressor().compress}


def _write(path: Path, records: list[dict]) -> None:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    kind = path.name.rpartition(".")[2]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_COMPRESS[kind](data) if kind in _COMPRESS else data)


def _main(*argv: object) -> int:
    return jsonl.main([*map(str, argv), "--progress", "never"])


def _inputs(folder: Path) -> list[dict]:
    """Four files (plain, gzip, zstd, bzip2) of 100 records each, named so that they sort in that order."""
    records = _records(400)
    _write(folder / "a.jsonl", records[:100])
    _write(folder / "b.json.gz", records[100:200])
    _write(folder / "c.jsonl.zst", records[200:300])
    _write(folder / "d.jsonl.bz2", records[300:])
    return records


def test_round_trip_with_inferred_columns_and_a_map(tmp_path: Path, reader, caplog) -> None:
    records = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert jsonl.main([str(tmp_path / "in"), "--out", str(out), "--map", "text=content"]) == 0
    samples = reader(out)
    assert len(samples) == 400
    for name in ("a.jsonl", "b.json.gz", "c.jsonl.zst", "d.jsonl.bz2"):  # the summary, per file
        size = (tmp_path / "in" / name).stat().st_size
        assert f"{tmp_path / 'in' / name}: 100 lines, " in caplog.text
        assert name == "a.jsonl" or f", {size:,} compressed bytes" in caplog.text
    for sample, record in zip(samples, records, strict=True):
        assert sample == {
            "text": record["content"],
            "id": record["id"],
            "score": record["score"],
            "meta": record["meta"],
        }


def test_columns_choose_and_type_the_output(tmp_path: Path, reader) -> None:
    records = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    argv = [str(tmp_path / "in" / "a.jsonl"), "--out", str(out), "--columns", "content:str,id:int32"]
    assert jsonl.main(argv) == 0
    assert reader(out) == [{"content": r["content"], "id": r["id"]} for r in records[:100]]


def test_one_and_four_workers_give_the_same_samples(tmp_path: Path, reader) -> None:
    records = _records(2000)
    _write(tmp_path / "in" / "big.jsonl", records[:1500])  # split by byte ranges
    _write(tmp_path / "in" / "small.jsonl.gz", records[1500:])
    one, four = tmp_path / "one", tmp_path / "four"
    assert jsonl.main([str(tmp_path / "in"), "--out", str(one)]) == 0
    assert jsonl.main([str(tmp_path / "in"), "--out", str(four), "--workers", "4", "--partitions", "9"]) == 0
    assert len(list(four.glob("part.*/index.json"))) >= 8
    a, b = reader(one), reader(four)
    assert [s["id"] for s in a] == list(range(2000)) and a == b


def test_a_malformed_line_names_file_and_line_and_leaves_nothing(tmp_path: Path, cli) -> None:
    lines = [json.dumps(r) for r in _records(1000)]
    lines[876] = '{"content": "cut short'
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = cli("jsonl", path, "--out", out, "--workers", "2", "--partitions", "5")
    assert result.returncode == 1
    assert f"{path}:877: malformed JSON" in result.stderr and "--skip-bad" in result.stderr
    assert not out.exists()


def test_skip_bad_skips_and_counts(tmp_path: Path, cli, reader) -> None:
    records = _records(50)
    lines = [json.dumps(r) for r in records]
    lines[10] = "not json"
    lines[20] = json.dumps({"id": 20})  # no content
    lines[30] = json.dumps({**records[30], "id": "thirty"})  # the wrong type
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = cli("jsonl", path, "--out", tmp_path / "out", "--skip-bad", "--columns", "content:str,id:int")
    assert result.returncode == 0, result.stderr
    assert "3 skipped" in result.stderr
    for number in (11, 21, 31):
        assert f"{path}:{number}" in result.stderr
    assert [s["id"] for s in reader(tmp_path / "out")] == [k for k in range(50) if k not in (10, 20, 30)]


def test_missing_input_is_a_clear_error(tmp_path: Path, cli) -> None:
    result = cli("jsonl", tmp_path / "nope.jsonl", "--out", tmp_path / "out")
    assert result.returncode == 1 and f"{tmp_path / 'nope.jsonl'} does not exist" in result.stderr
    assert not (tmp_path / "out").exists()


def _lines(count: int) -> bytes:
    return "".join(json.dumps({"id": k, "text": "t" * (k % 40)}) + "\n" for k in range(count)).encode()


@pytest.mark.parametrize("skip_bad", [False, True], ids=["strict", "skip-bad"])
@pytest.mark.parametrize("kind", ["zst", "gz", "bz2"])
def test_a_truncated_compressed_file_is_an_error_at_every_cut(
    tmp_path: Path, kind: str, skip_bad: bool, caplog
) -> None:
    blob = _COMPRESS[kind](_lines(3000))
    path = tmp_path / f"in.jsonl.{kind}"
    cuts = random.Random(f"{kind}-{skip_bad}").sample(range(len(blob)), 60)
    for k, cut in enumerate(cuts):
        path.write_bytes(blob[:cut])
        out = tmp_path / f"out{k}"
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert _main(path, "--out", out, *(["--skip-bad"] if skip_bad else [])) == 1, f"cut at {cut}"
        assert f"jsonl: {path} is truncated: it ends at byte {cut}" in caplog.text or (
            cut == 0 and f"{path} holds no" in caplog.text
        ), caplog.text
        assert not out.exists()


@pytest.mark.parametrize("kind", ["zst", "gz", "bz2"])
def test_a_multi_frame_file_cut_inside_a_later_frame(tmp_path: Path, kind: str, reader, caplog) -> None:
    """50,000 lines in 10 frames (members, streams), cut in the middle of the 9th: the old zstd reader
    stopped there quietly with the lines of 8 frames written."""
    data = _lines(50_000)
    bounds = [data.index(b"\n", len(data) * k // 10) + 1 for k in range(1, 10)]
    frames = [_COMPRESS[kind](data[a:b]) for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True)]
    path = tmp_path / f"in.jsonl.{kind}"
    path.write_bytes(b"".join(frames))
    if kind == "zst":  # whole, every frame is read
        assert _main(path, "--out", tmp_path / "whole") == 0
        assert [s["id"] for s in reader(tmp_path / "whole")] == list(range(50_000))
    start = sum(len(frame) for frame in frames[:8])
    path.write_bytes(b"".join(frames)[: start + len(frames[8]) // 2])
    with caplog.at_level(logging.ERROR):
        assert _main(path, "--out", tmp_path / "cut", "--skip-bad") == 1
    assert f"{path} is truncated" in caplog.text and f"starts at byte {start} (after 8 whole" in caplog.text
    assert not (tmp_path / "cut").exists()


@pytest.mark.parametrize("kind", ["gz", "zst", "bz2"])
def test_a_corrupt_compressed_file_names_the_file(tmp_path: Path, kind: str, caplog) -> None:
    blob = bytearray(_COMPRESS[kind](_lines(3000)))
    middle = len(blob) // 2
    blob[middle : middle + 16] = bytes(b ^ 0x5A for b in blob[middle : middle + 16])
    path = tmp_path / f"in.jsonl.{kind}"
    path.write_bytes(bytes(blob))
    with caplog.at_level(logging.ERROR):
        assert _main(path, "--out", tmp_path / "out", "--skip-bad") == 1  # an error, not a traceback
    assert f"jsonl: {path}: corrupt" in caplog.text and "within bytes" in caplog.text
    assert not (tmp_path / "out").exists()
