"""jsonl: plain, gzip and zstd files, --columns, --map, malformed lines, workers, --skip-bad."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import zstandard

from shardflow.convert import jsonl


def _records(count: int, start: int = 0) -> list[dict]:
    return [
        {"content": f"doc {k} é \n" + "x" * (k % 50), "id": k, "score": k / 7, "meta": {"k": [k]}}
        for k in range(start, start + count)
    ]


def _write(path: Path, records: list[dict]) -> None:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _inputs(folder: Path) -> list[dict]:
    """Three files (plain, gzip, zstd) of 100 records each, named so that they sort in that order."""
    records = _records(300)
    _write(folder / "a.jsonl", records[:100])
    _write(folder / "b.json.gz", records[100:200])
    _write(folder / "c.jsonl.zst", records[200:])
    return records


def test_round_trip_with_inferred_columns_and_a_map(tmp_path: Path, reader) -> None:
    records = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    assert jsonl.main([str(tmp_path / "in"), "--out", str(out), "--map", "text=content"]) == 0
    samples = reader(out)
    assert len(samples) == 300
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
