"""Feed a GPU from a cached dataset: StreamingDataLoader with pinned memory and non_blocking copies.

    python benchmarks/gpu_feed_bench.py                                  # issue 9's rows: 1, 4, 12 workers
    python benchmarks/gpu_feed_bench.py --device cpu --scale 0.05 --workers 1 2   # the code path, no GPU

Run it with ``python3 -m hatch run python benchmarks/gpu_feed_bench.py`` from the repository root. It
writes the 1M x 520-byte ``tokens`` dataset of ``dataset_bench.py`` into a temporary folder, then, each in
a fresh process:

- baseline: one process of ``LocalDataset.get_batch`` on the ids of a shuffled permutation, ``np.stack``
  of the ``tokens`` column and a copy to the device, 256 samples at a time;
- ``StreamingDataLoader(num_workers=N, batch_size=256, pin_memory=True)`` over a shuffled
  ``StreamingDataset``, each batch's ``tokens`` copied with ``non_blocking=True``.

Rates are samples/s from the first batch on, the device synchronised before the clock stops; each stops
after ``SECONDS``. The table gives each loader's rate per worker next to the baseline's rate.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from dataset_bench import BATCH, CASES, write_mds  # noqa: E402

SECONDS = 8.0


def _device(name: str) -> Any:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run with --device cpu to try the code path")
    return torch.device(name)


def _synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_baseline(folder: str, count: int, device_name: str) -> dict[str, float]:
    """One process: get_batch + np.stack + a copy to the device, a batch of shuffled ids at a time."""
    import torch

    from shardflow.format import LocalDataset

    device = _device(device_name)
    dataset = LocalDataset(folder)
    ids = np.random.default_rng(0).permutation(count)
    started, seen = time.perf_counter(), 0
    for begin in range(0, count, BATCH):
        samples = dataset.get_batch(ids[begin : begin + BATCH])
        tokens = torch.from_numpy(np.stack([sample["tokens"] for sample in samples]))
        tokens.to(device, non_blocking=True)
        seen += len(samples)
        if time.perf_counter() - started > SECONDS:
            break
    _synchronize(device)
    return {"rate": seen / (time.perf_counter() - started)}


def measure_loader(folder: str, workers: int, device_name: str) -> dict[str, float]:
    """StreamingDataLoader of ``workers`` workers, pinned memory, non_blocking copies to the device."""
    from shardflow.dataset import StreamingDataLoader, StreamingDataset

    device = _device(device_name)
    dataset = StreamingDataset(local=folder, shuffle=True, batch_size=BATCH)
    loader = StreamingDataLoader(
        dataset, batch_size=BATCH, num_workers=workers, pin_memory=device.type == "cuda"
    )
    started = time.perf_counter()
    batches = iter(loader)
    next(batches)["tokens"].to(device, non_blocking=True)
    steady, seen = time.perf_counter(), 0
    for batch in batches:
        batch["tokens"].to(device, non_blocking=True)
        seen += len(batch["tokens"])
        if time.perf_counter() - steady > SECONDS:
            break
    _synchronize(device)
    ended = time.perf_counter()
    return {"rate": seen / (ended - steady), "first_batch_s": steady - started}


def run_process(*args: str) -> dict[str, float]:
    """One measurement in a fresh process (this script with ``--measure``)."""
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="where batches go")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 12], help="DataLoader workers")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 1M samples")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure == "baseline":
        print(json.dumps(measure_baseline(args.folder, args.count, args.device)))
        return
    if args.measure == "loader":
        print(json.dumps(measure_loader(args.folder, args.workers[0], args.device)))
        return
    count = max(2_000, int(CASES["tokens"][1] * args.scale))
    workdir = Path(tempfile.mkdtemp(prefix="gpu-feed-bench-"))
    try:
        folder = workdir / "tokens"
        write_mds("tokens", count, folder)
        common = ["--folder", str(folder), "--count", str(count), "--device", args.device]
        baseline = run_process("--measure", "baseline", *common)["rate"]
        print(f"tokens ({count:,} x 520 bytes), batches of {BATCH} to {args.device}; {os.cpu_count()} CPUs")
        print()
        print("| reader | samples/s | per worker | per worker vs baseline | first batch, s |")
        print("| --- | ---: | ---: | ---: | ---: |")
        print(f"| one process: get_batch + np.stack + copy | {baseline:,.0f} | - | - | - |")
        pinned = ", pin_memory" if args.device == "cuda" else ""
        for workers in args.workers:
            found = run_process("--measure", "loader", "--workers", str(workers), *common)
            per = found["rate"] / workers
            print(
                f"| StreamingDataLoader, {workers} workers{pinned} | {found['rate']:,.0f} | {per:,.0f} "
                f"| {per / baseline:.1f}x | {found['first_batch_s']:.2f} |",
                flush=True,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
