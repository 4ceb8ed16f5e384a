"""--resume: a conversion killed with SIGKILL midway and resumed equals an uninterrupted one; a resume
with other input content or other output options is refused, naming what differs, and changes nothing."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shardflow.convert import _record, jsonl

COMMON = ["--workers", "2", "--partitions", "40", "--size-limit", "200kb"]


def _input(path: Path, count: int) -> None:
    with path.open("w") as file:
        for k in range(count):
            file.write(json.dumps({"id": k, "text": f"line {k} " + "y" * (k % 200)}) + "\n")


def _kill_midway(source: Path, out: Path, finished: int, *options: str) -> set[str]:
    """Run the jsonl converter in a subprocess and SIGKILL it (and its workers) once ``finished``
    partitions are; returns the finished ones."""
    command = [sys.executable, "-m", "shardflow.convert.jsonl", str(source), "--out", str(out), *options]
    process = subprocess.Popen(command, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while (
        len(list(out.glob("part.*/index.json"))) < finished
        and process.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)  # the main process and its workers, like a machine going down
    process.wait()
    done = {p.parent.name for p in out.glob("part.*/index.json")}
    assert finished <= len(done) < 40 and not (out / "index.json").exists(), "kill came too late to test"
    return done


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (empty folders too) and its bytes."""
    return {
        str(path.relative_to(folder)): path.read_bytes() if path.is_file() else b"<dir>"
        for path in sorted(folder.rglob("*"))
    }


@pytest.mark.slow
def test_kill_then_resume_equals_an_uninterrupted_run(tmp_path: Path, cli, reader) -> None:
    source = tmp_path / "in.jsonl"
    _input(source, 400_000)
    out = tmp_path / "out"
    finished = _kill_midway(source, out, 6, *COMMON)
    stamps = {name: (out / name / "index.json").stat().st_mtime_ns for name in finished}

    result = cli("jsonl", source, "--out", out, "--resume", *COMMON)
    assert result.returncode == 0, result.stderr
    assert f"{len(finished)} of 40 partitions are finished" in result.stderr
    assert {name: (out / name / "index.json").stat().st_mtime_ns for name in finished} == stamps

    refused = cli("jsonl", source, "--out", out)
    assert refused.returncode == 1 and "--resume" in refused.stderr

    fresh = tmp_path / "fresh"
    assert cli("jsonl", source, "--out", fresh, *COMMON).returncode == 0
    resumed = reader(out)
    assert len(resumed) == 400_000 and resumed == reader(fresh)
    assert [s["id"] for s in resumed] == list(range(400_000))


def test_resume_after_kill_refuses_changed_content_and_changed_options(
    tmp_path: Path, reader, caplog
) -> None:
    source = tmp_path / "in.jsonl"
    _input(source, 60_000)
    out = tmp_path / "out"
    options = ["--partitions", "40", "--size-limit", "100kb", "--map", "body=text"]
    _kill_midway(source, out, 1, *options)
    before = _snapshot(out)
    original = source.read_bytes()
    stat = source.stat()

    def resume(*extra: str) -> str:
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert jsonl.main([str(source), "--out", str(out), "--resume", *extra]) == 1
        assert _snapshot(out) == before, "a refused resume changed the output"
        assert "nothing there was changed" in caplog.text
        return caplog.text

    # Other content, same name, size and mtime.
    changed = original.replace(b'"id": 59999', b'"id": 59998')
    assert changed != original and len(changed) == len(original)
    source.write_bytes(changed)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (source.stat().st_size, source.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert f"input {source}: its content differs (same size" in resume(*options)
    source.write_bytes(original)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    # Each output option changed (or left out) alone.
    assert '--size-limit: 102400 then, 67108864 now' in resume("--partitions", "40", "--map", "body=text")
    assert '--compression: null then, "zstd" now' in resume(*options, "--compression", "zstd")
    assert '--hashes: [] then, ["sha1", "xxh64"] now' in resume(*options, "--hashes", "sha1,xxh64")
    assert '--map: {"body": "text"} then, {} now' in resume("--partitions", "40", "--size-limit", "100kb")
    assert "--skip-bad: false then, true now" in resume(*options, "--skip-bad")
    assert "--partitions: 40 then, 41 now" in resume(*options, "--partitions", "41")
    text = resume(*options, "--columns", "body:str")
    assert 'columns: {"body": "str", "id": "int64"} then, {"body": "str"} now' in text

    # The same input and options: resumed, and equal to an uninterrupted conversion.
    assert jsonl.main([str(source), "--out", str(out), "--resume", "--workers", "2", *options]) == 0
    assert jsonl.main([str(source), "--out", str(tmp_path / "fresh"), *options]) == 0
    resumed = reader(out)
    assert [s["id"] for s in resumed] == list(range(60_000)) and resumed == reader(tmp_path / "fresh")


def test_resume_refuses_other_input(tmp_path: Path, cli) -> None:
    _input(tmp_path / "a.jsonl", 100)
    _input(tmp_path / "b.jsonl", 101)
    assert cli("jsonl", tmp_path / "a.jsonl", "--out", tmp_path / "out").returncode == 0
    result = cli("jsonl", tmp_path / "b.jsonl", "--out", tmp_path / "out", "--resume")
    assert result.returncode == 1 and "other input or options" in result.stderr
    assert f"input {tmp_path / 'b.jsonl'} is new" in result.stderr


def test_a_record_of_an_older_format_is_not_resumed(tmp_path: Path, caplog) -> None:
    _input(tmp_path / "a.jsonl", 10)
    out = tmp_path / "out"
    out.mkdir()
    old = {"converter": "jsonl", "fingerprint": "ab", "partitions": 4}  # what shardflow 0.1 recorded
    (out / "convert.json").write_text(json.dumps(old))
    with caplog.at_level(logging.ERROR):
        assert jsonl.main([str(tmp_path / "a.jsonl"), "--out", str(out), "--resume"]) == 1
    assert "recorded in another format" in caplog.text and [p.name for p in out.iterdir()] == ["convert.json"]


def test_big_files_are_fingerprinted_by_sampled_ranges_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    data = bytearray(os.urandom(_record.SAMPLE_BYTES * 40))
    path.write_bytes(data)
    whole = _record.file_fingerprint(str(path))
    assert whole.startswith(f"{len(data)}:blake2b:")
    sampled = _record.file_fingerprint(str(path), whole_limit=1 << 20)
    stat = path.stat()
    assert sampled.startswith(f"{len(data)}:{stat.st_mtime_ns}:blake2b-sampled:")
    data[0] ^= 1  # the first range is always sampled
    path.write_bytes(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _record.file_fingerprint(str(path), whole_limit=1 << 20) != sampled
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    now = _record.file_fingerprint(str(path), whole_limit=1 << 20)
    recorded = {"version": _record.VERSION, "converter": "x", "options": {}, "inputs": {str(path): sampled}}
    current = {**recorded, "inputs": {str(path): now}}
    assert _record.differences(recorded, current) == [
        f"input {path}: modified since (mtime {stat.st_mtime_ns} then, {stat.st_mtime_ns + 1} now; too big "
        "to digest whole)"
    ]


def test_many_inputs_are_recorded_per_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(_record, "MAX_LISTED", 3)
    files = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for k in range(3):
            files.append(tmp_path / folder / f"{k}.txt")
            files[-1].write_text(f"{folder} {k}")
    then = _record.input_fingerprints(map(str, files))
    assert sorted(then) == [f"{tmp_path / 'a'}/", f"{tmp_path / 'b'}/"]
    assert all(value.startswith("3 files:blake2b:") for value in then.values())
    files[4].write_text("b X")
    now = _record.input_fingerprints(map(str, files))
    recorded = {"version": _record.VERSION, "converter": "x", "options": {}, "inputs": then}
    found = _record.differences(recorded, {**recorded, "inputs": now})
    assert len(found) == 1 and found[0].startswith(f"input folder {tmp_path / 'b'}/: a file in it was added")
