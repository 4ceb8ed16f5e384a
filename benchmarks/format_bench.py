"""Write and read MDS datasets with shardflow and mosaicml-streaming side by side; print a table.

    python benchmarks/format_bench.py                 # the full run of the issue (1M token samples)
    python benchmarks/format_bench.py --scale 0.1     # a tenth of the samples, for a quick look
    python benchmarks/format_bench.py --repeat 1      # one run per case instead of the best of three

Each implementation runs in its own process (the reference from the venv built by
../shared/reference/setup.sh, or $SHARDFLOW_REFERENCE_PYTHON) on the same samples; the script re-executes
itself with ``--impl``. Writes time every ``write`` plus ``finish()``; reads time the first ``READ_CAP``
samples in order and ``READ_CAP`` random ``ds[i]``, or as many as ``READ_SECONDS`` allow (the reference's
sequential reads manage about a thousand a second). Every number is the best of ``--repeat`` fresh runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = {
    "tokens": ({"id": "int", "tokens": "ndarray:uint16:256"}, 1_000_000),
    "images": ({"label": "int", "image": "bytes"}, 50_000),
}
COMPRESSIONS = [None, "zstd"]
READ_CAP = 100_000  # reads time the first 100k samples (sequential) and 100k random ids ...
READ_SECONDS = 10.0  # ... or as many as fit in this time


def make_samples(case: str, count: int) -> list[dict]:
    """Deterministic samples; values are views into one array so that building them costs little."""
    rng = np.random.default_rng(0)
    if case == "tokens":
        tokens = rng.integers(0, 50_000, size=(count, 256), dtype=np.uint16)
        return [{"id": i, "tokens": tokens[i]} for i in range(count)]
    pixels = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
    return [{"label": i % 1000, "image": pixels[i].tobytes()} for i in range(count)]


def run_impl(impl: str, case: str, compression: str | None, count: int, folder: Path) -> dict:
    """Write then read one dataset with one implementation; return timings."""
    columns, _ = CASES[case]
    samples = make_samples(case, count)
    if impl == "shardflow":
        from shardflow.format import LocalDataset, MDSWriter

        def open_dataset() -> object:
            return LocalDataset(str(folder))
    else:
        from streaming import MDSWriter, StreamingDataset

        def open_dataset() -> object:
            return StreamingDataset(local=str(folder), batch_size=1, shuffle=False)

    started = time.perf_counter()
    with MDSWriter(out=str(folder), columns=columns, compression=compression) as writer:
        for sample in samples:
            writer.write(sample)
    write_s = time.perf_counter() - started
    disk_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    dataset = open_dataset()
    started = time.perf_counter()
    deadline = started + READ_SECONDS
    seen = 0
    for _ in dataset:  # type: ignore[attr-defined]
        seen += 1
        if seen == READ_CAP or (seen % 256 == 0 and time.perf_counter() > deadline):
            break
    seq_s = time.perf_counter() - started
    order = np.random.default_rng(1).permutation(count)[:READ_CAP]
    started = time.perf_counter()
    deadline = started + READ_SECONDS
    done = 0
    for i in order.tolist():
        dataset[i]  # type: ignore[index]
        done += 1
        if done % 256 == 0 and time.perf_counter() > deadline:
            break
    random_s = time.perf_counter() - started
    payload = sum(len(s["tokens"]) * 2 if case == "tokens" else len(s["image"]) for s in samples[:1]) * count
    return {"write_s": write_s, "seq_s": seq_s, "seq_n": seen, "random_s": random_s, "random_n": done,
            "payload_mb": payload / 1e6, "disk_mb": disk_bytes / 1e6}


def floor_write_s(case: str, count: int, folder: Path) -> float:
    """Seconds for a bare loop that builds each sample's MDS bytes (no checks, no shards, no index) and
    writes them to one file in 1 MiB pieces: a floor for any writer fed one sample per Python call."""
    samples = make_samples(case, count)
    prefix = struct.Struct("<I").pack
    started = time.perf_counter()
    with open(folder / "floor.bin", "wb", buffering=0) as out:
        pieces: list[bytes] = []
        pending = 0
        for sample in samples:
            if case == "tokens":
                tokens = sample["tokens"].tobytes()
                pieces += (sample["id"].to_bytes(8, "little", signed=True), tokens)
                pending += 8 + len(tokens)
            else:
                image = sample["image"]
                pieces += (prefix(len(image)), sample["label"].to_bytes(8, "little", signed=True), image)
                pending += 12 + len(image)
            if pending >= 1 << 20:
                out.write(b"".join(pieces))
                pieces, pending = [], 0
        out.write(b"".join(pieces))
    return time.perf_counter() - started


def measure_once(python: str, impl: str, case: str, compression: str | None, count: int) -> dict:
    """Run one implementation in a fresh process on a fresh folder."""
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{impl}-"))
    try:
        result = subprocess.run(
            [python, __file__, "--impl", impl, "--case", case, "--compression", str(compression),
             "--count", str(count), "--folder", str(folder / "ds")],
            capture_output=True, text=True, check=True,
        )
        return json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measure(python: str, impl: str, case: str, compression: str | None, count: int, repeat: int) -> dict:
    """The best write, sequential-read and random-read rates of ``repeat`` fresh runs."""
    runs = [measure_once(python, impl, case, compression, count) for _ in range(repeat)]
    best = dict(runs[0])
    best["write_s"] = min(r["write_s"] for r in runs)
    for kind in ("seq", "random"):
        fastest = max(runs, key=lambda r: r[f"{kind}_n"] / r[f"{kind}_s"])
        best[f"{kind}_n"], best[f"{kind}_s"] = fastest[f"{kind}_n"], fastest[f"{kind}_s"]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the issue's sample counts")
    parser.add_argument("--no-reference", action="store_true", help="skip mosaicml-streaming")
    parser.add_argument("--repeat", type=int, default=3, help="fresh runs per case; the best counts")
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--compression", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.impl:
        compression = None if args.compression == "None" else args.compression
        print(json.dumps(run_impl(args.impl, args.case, compression, args.count, args.folder)))
        return

    sys.path.insert(0, str(Path(__file__).parent))
    from _reference import reference_python

    impls = [("shardflow", sys.executable)]
    if not args.no_reference:
        reference = reference_python()
        if reference is None:
            sys.exit("the reference venv could not be built: run bash ../shared/reference/setup.sh")
        impls.append(("mosaicml-streaming", reference))
    print("| case | compression | impl | samples | write samples/s | write MB/s | write vs reference "
          "| seq read samples/s | random [i] samples/s | on disk MB |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for case, (_, full_count) in CASES.items():
        count = max(1000, int(full_count * args.scale))
        for compression in COMPRESSIONS:
            results = []
            for name, python in impls:
                impl = "shardflow" if name == "shardflow" else "reference"
                results.append((name, measure(python, impl, case, compression, count, args.repeat)))
            reference_s = results[-1][1]["write_s"] if len(results) > 1 else None
            if compression is None:
                with tempfile.TemporaryDirectory(prefix="bench-floor-") as folder:
                    floor_s = min(floor_write_s(case, count, Path(folder)) for _ in range(args.repeat))
                ratio = f"{reference_s / floor_s:.1f}x" if reference_s else "-"
                print(f"| {case} | none | floor: bare loop + write | {count:,} | {count / floor_s:,.0f} "
                      f"| {results[0][1]['payload_mb'] / floor_s:,.0f} | {ratio} | - | - | - |", flush=True)
            for name, r in results:
                ratio = f"{reference_s / r['write_s']:.1f}x" if reference_s else "-"
                print(f"| {case} | {compression or 'none'} | {name} | {count:,} "
                      f"| {count / r['write_s']:,.0f} | {r['payload_mb'] / r['write_s']:,.0f} | {ratio} "
                      f"| {r['seq_n'] / r['seq_s']:,.0f} "
                      f"| {r['random_n'] / r['random_s']:,.0f} | {r['disk_mb']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
