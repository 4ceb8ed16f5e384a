"""Random datasets written by the reference (mosaicml-streaming) and by shardflow are the same bytes.

Needs the reference virtual environment, built by ``../shared/reference/setup.sh`` (never skipped).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from shardflow.format import CSVWriter, JSONWriter, MDSWriter, TSVWriter

# Shared by both sides: the samples of one job, a pure function of (kind, seed, count).
GENERATE = """
import numpy as np

def samples(kind, seed, count):
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghij klmnopq\\u00e9\\u4e2d"))
    result = []
    for i in range(count):
        # Some samples are larger than size_limit, but never the first (the reference would then emit an
        # empty shard, which shardflow does not).
        if kind == "fixed":  # every sample the same size: full shards fill the hole left for their header
            result.append({"num": i, "vec": rng.integers(0, 2**16, size=16, dtype=np.uint16)})
            continue
        n = 3000 if i and rng.random() < 0.03 else int(rng.integers(0, 300))
        text = "".join(rng.choice(letters, size=n))
        if kind == "mds":
            result.append({
                "text": text,
                "num": int(rng.integers(-2**40, 2**40)),
                "vec": rng.integers(0, 1000, size=int(rng.integers(1, 20))).astype(np.int32),
                "fixed": rng.random(4).astype(np.float32),
                "blob": rng.integers(0, 256, size=int(rng.integers(0, 50)), dtype=np.uint8).tobytes(),
                "meta": {"i": i, "tags": ["x"] * (i % 3)},
            })
        else:
            number = int(rng.integers(-10**9, 10**9))
            result.append({"id": text, "number": number, "ratio": float(rng.random())})
    return result
"""

MDS_COLUMNS = {
    "text": "str",
    "num": "int",
    "vec": "ndarray:int32",
    "fixed": "ndarray:float32:4",
    "blob": "bytes",
    "meta": "json",
}
FIXED_COLUMNS = {"num": "int", "vec": "ndarray:uint16:16"}
TEXT_COLUMNS = {"id": "str", "number": "int", "ratio": "float"}
JOBS: list[dict[str, Any]] = [
    {
        "writer": "MDSWriter",
        "seed": 1,
        "count": 300,
        "kwargs": {"size_limit": 2048, "hashes": ["md5", "sha1"]},
    },
    {"writer": "MDSWriter", "seed": 2, "count": 300, "kwargs": {"size_limit": 4096, "compression": "zstd:5"}},
    {"writer": "MDSWriter", "seed": 3, "count": 100, "kwargs": {"size_limit": None, "hashes": ["xxh64"]}},
    {
        "writer": "MDSWriter",
        "kind": "fixed",
        "seed": 7,
        "count": 250,
        "kwargs": {"size_limit": 1500, "hashes": ["sha1", "xxh64"]},
    },
    {
        "writer": "MDSWriter",
        "kind": "fixed",
        "seed": 8,
        "count": 250,
        "kwargs": {"size_limit": 3000, "compression": "zstd"},
    },
    {"writer": "JSONWriter", "seed": 4, "count": 200, "kwargs": {"size_limit": 1024}},
    {"writer": "CSVWriter", "seed": 5, "count": 200, "kwargs": {"size_limit": 2000, "compression": "bz2"}},
    {"writer": "TSVWriter", "seed": 6, "count": 200, "kwargs": {"size_limit": 700, "hashes": ["sha256"]}},
]
WRITERS = {"MDSWriter": MDSWriter, "JSONWriter": JSONWriter, "CSVWriter": CSVWriter, "TSVWriter": TSVWriter}

REFERENCE_SCRIPT = (
    GENERATE
    + """
import json, sys
from streaming import CSVWriter, JSONWriter, MDSWriter, TSVWriter
writer = {"MDSWriter": MDSWriter, "JSONWriter": JSONWriter, "CSVWriter": CSVWriter, "TSVWriter": TSVWriter}
for job in json.loads(sys.argv[1]):
    kind = job.get("kind", "mds" if job["writer"] == "MDSWriter" else "text")
    with writer[job["writer"]](out=job["out"], columns=job["columns"], **job["kwargs"]) as out:
        for sample in samples(kind, job["seed"], job["count"]):
            out.write(sample)
"""
)


def test_random_datasets_match_the_reference(tmp_path: Path, reference_python: Path) -> None:
    namespace: dict[str, Any] = {}
    exec(GENERATE, namespace)  # The same generator the reference process runs
    jobs = []
    for number, job in enumerate(JOBS):
        kind = job.get("kind", "mds" if job["writer"] == "MDSWriter" else "text")
        columns = {"mds": MDS_COLUMNS, "fixed": FIXED_COLUMNS, "text": TEXT_COLUMNS}[kind]
        ours = tmp_path / f"ours{number}"
        with WRITERS[job["writer"]](out=ours, columns=columns, **job["kwargs"]) as writer:
            for sample in namespace["samples"](kind, job["seed"], job["count"]):
                writer.write(sample)
        jobs.append({**job, "columns": columns, "out": str(tmp_path / f"theirs{number}")})
    subprocess.run(
        [str(reference_python), "-c", REFERENCE_SCRIPT, json.dumps(jobs)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    for number in range(len(JOBS)):
        ours, theirs = tmp_path / f"ours{number}", tmp_path / f"theirs{number}"
        names = sorted(path.name for path in theirs.iterdir())
        assert sorted(path.name for path in ours.iterdir()) == names, JOBS[number]
        assert len(names) > 2 or JOBS[number]["kwargs"]["size_limit"] is None
        for name in names:
            assert (ours / name).read_bytes() == (theirs / name).read_bytes(), (JOBS[number], name)
