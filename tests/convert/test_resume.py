"""A conversion killed with SIGKILL midway, run again with --resume, equals an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _input(path: Path, count: int) -> None:
    with path.open("w") as file:
        for k in range(count):
            file.write(json.dumps({"id": k, "text": f"line {k} " + "y" * (k % 200)}) + "\n")


@pytest.mark.slow
def test_kill_then_resume_equals_an_uninterrupted_run(tmp_path: Path, cli, reader) -> None:
    source = tmp_path / "in.jsonl"
    _input(source, 400_000)
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "shardflow.convert.jsonl",
        str(source),
        "--out",
        str(out),
        "--workers",
        "2",
        "--partitions",
        "40",
        "--size-limit",
        "200kb",
    ]
    process = subprocess.Popen(command, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while (
        len(list(out.glob("part.*/index.json"))) < 6
        and process.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the main process and its workers, like a machine going down
    process.wait()
    finished = {p.parent.name for p in out.glob("part.*/index.json")}
    assert 6 <= len(finished) < 40 and not (out / "index.json").exists(), "kill came too late to test resume"
    stamps = {name: (out / name / "index.json").stat().st_mtime_ns for name in finished}

    result = cli("jsonl", source, "--out", out, "--workers", "2", "--resume")
    assert result.returncode == 0, result.stderr
    assert f"{len(finished)} of 40 partitions are finished" in result.stderr
    assert {name: (out / name / "index.json").stat().st_mtime_ns for name in finished} == stamps

    refused = cli("jsonl", source, "--out", out)
    assert refused.returncode == 1 and "--resume" in refused.stderr

    fresh = tmp_path / "fresh"
    assert cli("jsonl", source, "--out", fresh, "--workers", "2").returncode == 0
    resumed = reader(out)
    assert len(resumed) == 400_000 and resumed == reader(fresh)
    assert [s["id"] for s in resumed] == list(range(400_000))


def test_resume_refuses_other_input(tmp_path: Path, cli) -> None:
    _input(tmp_path / "a.jsonl", 100)
    _input(tmp_path / "b.jsonl", 101)
    assert cli("jsonl", tmp_path / "a.jsonl", "--out", tmp_path / "out").returncode == 0
    result = cli("jsonl", tmp_path / "b.jsonl", "--out", tmp_path / "out", "--resume")
    assert result.returncode == 1 and "other input or settings" in result.stderr
