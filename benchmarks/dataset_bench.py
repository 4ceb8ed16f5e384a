"""Read cached datasets with shardflow, mosaicml-streaming and LitData side by side; print a table.

    python benchmarks/dataset_bench.py                      # the full run of issue 9 (1M tokens, 50k images)
    python benchmarks/dataset_bench.py --scale 0.05         # a twentieth of the samples, for a quick look
    python benchmarks/dataset_bench.py --repeat 1           # one process per case, not the best of 3
    python benchmarks/dataset_bench.py --only shardflow     # one implementation (shardflow|reference|litdata)
    python benchmarks/dataset_bench.py --skip-stream        # without the epoch streamed from moto's S3 server
    python benchmarks/dataset_bench.py --case images        # one dataset's rows (tokens|images)

Run it with ``python3 -m hatch run python benchmarks/dataset_bench.py`` from the repository root. The
datasets are written once per run into a temporary folder: MDS by shardflow's ``MDSWriter`` (read by
shardflow and by mosaicml-streaming 0.13.0, whose format it is), LitData's own chunks by
``litdata.streaming.writer.BinaryWriter`` (the writer ``litdata.optimize`` drives, without its process pool).
A 10M-sample MDS dataset for the memory rows costs no disk: its index lists the 1M dataset's shards ten
times, hard-linked under other names.

Every case runs in a fresh process: shardflow in this Python, the reference and LitData in the venv of
../shared/reference/setup.sh (or $SHARDFLOW_REFERENCE_PYTHON), which never imports shardflow; the script
re-executes itself with ``--impl``. Each timing stops after ``READ_SECONDS`` (the reference iterates a few
thousand samples a second), and every number is the best of ``--repeat`` fresh processes.

- one process: a plain ``for sample in dataset`` (in order, and shuffled), timed from the first sample on
  (the time to it is the "constructor to first sample" row, taken from the in-order run).
- DataLoader: ``num_workers=2, batch_size=256``, shuffled; timed from the first batch (worker start-up is
  the "first batch" column of the notes). shardflow: ``StreamingDataLoader`` (batch path), and again with
  ``batch_reads=False``; the reference: torch's ``DataLoader``; LitData: its ``StreamingDataLoader``.
- ``ds[i]``: random ids of a permutation.
- constructor to first sample: in a fresh process, after the imports, the dataset already local.
- worker RSS: each DataLoader worker reads its own ``/proc/self/status`` every 50 ms from a thread that
  ``worker_init_fn`` starts; the table shows the largest VmHWM of the two workers (and their largest
  RssAnon, i.e. without the mapped shard files).
- epoch streamed cold: a moto S3 server on 127.0.0.1 holds an MDS copy (100k token samples in 8 MiB
  shards); one process reads it in order from an empty cache.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

CASES: dict[str, tuple[dict[str, str], int]] = {
    "tokens": ({"id": "int", "tokens": "ndarray:uint16:256"}, 1_000_000),
    "images": ({"label": "int", "image": "bytes"}, 50_000),
}
BIG_FACTOR = 10  # the memory rows compare the tokens dataset with one whose index lists 10x the samples
STREAM_SAMPLES = 100_000  # token samples of the dataset streamed from moto
STREAM_SHARD_BYTES = 1 << 23
READ_SECONDS = 5.0  # every timing stops after this long
LOAD_SECONDS = 8.0  # ... DataLoader timings after this long (worker start-up not counted)
BATCH = 256
WORKERS = 2
BLOCK = 50_000  # samples generated at a time when writing
BUCKET = "bench"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}
IMPLS = ("shardflow", "reference", "litdata")
NAMES = {"shardflow": "shardflow", "reference": "mosaicml-streaming", "litdata": "litdata"}

# -- samples ------------------------------------------------------------------------------------------


def sample_blocks(case: str, count: int) -> Iterator[list[dict[str, Any]]]:
    """Deterministic samples in blocks of ``BLOCK`` (the values are views into one array per block)."""
    for begin in range(0, count, BLOCK):
        size = min(BLOCK, count - begin)
        rng = np.random.default_rng(begin)
        if case == "tokens":
            tokens = rng.integers(0, 50_000, size=(size, 256), dtype=np.uint16)
            yield [{"id": begin + i, "tokens": tokens[i]} for i in range(size)]
        else:
            pixels = rng.integers(0, 256, size=(size, 3072), dtype=np.uint8)
            yield [{"label": (begin + i) % 1000, "image": pixels[i].tobytes()} for i in range(size)]


def write_mds(case: str, count: int, folder: Path, size_limit: int = 1 << 26) -> None:
    """The MDS dataset, by shardflow's writer (this process has shardflow)."""
    from shardflow.format import MDSWriter

    with MDSWriter(out=str(folder), columns=CASES[case][0], size_limit=size_limit) as writer:
        for block in sample_blocks(case, count):
            for sample in block:
                writer.write(sample)


def write_litdata(case: str, count: int, folder: Path) -> None:
    """LitData's chunks and index, by its BinaryWriter (run in the reference venv)."""
    from litdata.streaming.writer import BinaryWriter

    writer = BinaryWriter(str(folder), chunk_bytes="64MB")
    index = 0
    for block in sample_blocks(case, count):
        for sample in block:
            writer.add_item(index, sample)
            index += 1
    writer.done()
    writer.merge()


def link_repeated(source: Path, target: Path, times: int) -> None:
    """An MDS folder whose index lists ``source``'s shards ``times`` times, as hard links under new names."""
    index = json.loads((source / "index.json").read_text())
    target.mkdir(parents=True)
    shards = []
    for r in range(times):
        for entry in index["shards"]:
            copy = json.loads(json.dumps(entry))
            for key in ("raw_data", "zip_data"):
                if copy.get(key):
                    name = f"r{r}.{copy[key]['basename']}"
                    os.link(source / copy[key]["basename"], target / name)
                    copy[key]["basename"] = name
            shards.append(copy)
    (target / "index.json").write_text(json.dumps({**index, "shards": shards}))


# -- the measuring process (one implementation, one case) -------------------------------------------

RSS_FOLDER: str | None = None  # where DataLoader workers report their memory; set before the loader starts


def _proc_status_kb() -> dict[str, int]:
    """VmHWM and RssAnon of this process, in kB."""
    values: dict[str, int] = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "RssAnon"):
                values[key] = int(rest.split()[0])
    return values


def report_rss(worker_id: int) -> None:
    """``worker_init_fn``: a thread writes the worker's VmHWM and peak RssAnon to RSS_FOLDER every 50 ms."""
    if RSS_FOLDER is None:
        return
    path = Path(RSS_FOLDER) / f"worker-{os.getpid()}.json"
    spare = path.with_suffix(".tmp")

    def loop() -> None:
        peak_anon = 0
        while True:
            values = _proc_status_kb()
            peak_anon = max(peak_anon, values["RssAnon"])
            spare.write_text(
                json.dumps({"worker": worker_id, "hwm_kb": values["VmHWM"], "anon_kb": peak_anon})
            )
            os.replace(spare, path)
            time.sleep(0.05)

    threading.Thread(target=loop, name="rss-report", daemon=True).start()


def import_library(impl: str) -> None:
    """Import the implementation's modules (before any timing: imports are not what is measured)."""
    if impl == "shardflow":
        from shardflow.dataset import StreamingDataLoader, StreamingDataset  # noqa: F401  (loaded lazily)
    elif impl == "reference":
        import streaming  # noqa: F401
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()
    else:
        import litdata  # noqa: F401
    import torch.utils.data  # noqa: F401


def open_dataset(
    impl: str, folder: str, shuffle: bool, batch_size: int | None = None, remote: str | None = None
) -> Any:
    """The implementation's dataset over a local folder, or over ``remote`` cached into ``folder``.

    The reference refuses to iterate without a ``batch_size``; one process reading samples gets 1.
    """
    if impl == "shardflow":
        from shardflow.dataset import StreamingDataset

        return StreamingDataset(remote=remote, local=folder, shuffle=shuffle, batch_size=batch_size)
    if impl == "reference":
        from streaming import StreamingDataset as ReferenceDataset

        return ReferenceDataset(remote=remote, local=folder, shuffle=shuffle, batch_size=batch_size or 1)
    import litdata

    return litdata.StreamingDataset(folder, shuffle=shuffle)


def make_loader(impl: str, dataset: Any, batch_reads: bool | None) -> Any:
    """A DataLoader of ``WORKERS`` workers and batches of ``BATCH`` whose workers report their memory."""
    options: dict[str, Any] = {"batch_size": BATCH, "num_workers": WORKERS, "worker_init_fn": report_rss}
    if impl == "shardflow":
        from shardflow.dataset import StreamingDataLoader

        return StreamingDataLoader(dataset, batch_reads=batch_reads, **options)
    if impl == "reference":
        from torch.utils.data import DataLoader

        return DataLoader(dataset, **options)
    import litdata

    return litdata.StreamingDataLoader(dataset, **options)


def batch_size_of(batch: Any) -> int:
    """Samples in a collated batch (a dict of tensors or lists)."""
    return len(next(iter(batch.values())))


def count_for(items: Iterator[Any], size_of: Callable[[Any], int], cap: int, seconds: float) -> int:
    """Consume ``items`` until ``cap`` samples, ``seconds`` or the end; return the samples seen."""
    deadline = time.perf_counter() + seconds
    seen = 0
    for item in items:
        seen += size_of(item)
        if seen >= cap or ((seen & 255) == 0 or size_of is batch_size_of) and time.perf_counter() > deadline:
            break
    return seen


def _one(_: Any) -> int:
    return 1


def measure_case(impl: str, measure: str, folder: str, count: int, remote: str | None) -> dict[str, Any]:
    """Run one measurement of one implementation; return what it found."""
    global RSS_FOLDER
    import_library(impl)
    if measure in ("order", "shuffle"):
        started = time.perf_counter()
        dataset = open_dataset(impl, folder, shuffle=measure == "shuffle")
        samples = iter(dataset)
        next(samples)
        steady = time.perf_counter()
        seen = count_for(samples, _one, count - 1, READ_SECONDS)
        return {"rate": seen / (time.perf_counter() - steady), "n": seen + 1, "first_s": steady - started}
    if measure == "random":
        dataset = open_dataset(impl, folder, shuffle=False)
        ids = np.random.default_rng(1).permutation(count).tolist()
        started = time.perf_counter()
        deadline = started + READ_SECONDS
        done = 0
        for i in ids:
            dataset[i]
            done += 1
            if (done & 255) == 0 and time.perf_counter() > deadline:
                break
        return {"rate": done / (time.perf_counter() - started), "n": done}
    if measure in ("loader", "loader_samples", "loader_big"):
        RSS_FOLDER = tempfile.mkdtemp(prefix="dataset-bench-rss-")
        try:
            dataset = open_dataset(impl, folder, shuffle=True, batch_size=BATCH)
            loader = make_loader(impl, dataset, False if measure == "loader_samples" else None)
            started = time.perf_counter()
            batches = iter(loader)
            first = batch_size_of(next(batches))
            steady = time.perf_counter()
            seen = count_for(batches, batch_size_of, count - first, LOAD_SECONDS)
            ended = time.perf_counter()
            time.sleep(0.2)  # the workers' reporters write once more
            reports = [json.loads(p.read_text()) for p in Path(RSS_FOLDER).glob("worker-*.json")]
            del batches
        finally:
            shutil.rmtree(RSS_FOLDER, ignore_errors=True)
        rate = seen / (ended - steady) if seen else first / (steady - started)
        return {
            "rate": rate,
            "n": seen + first,
            "first_batch_s": steady - started,
            "workers": len(reports),
            "hwm_mb": max((r["hwm_kb"] for r in reports), default=0) / 1024,
            "anon_mb": max((r["anon_kb"] for r in reports), default=0) / 1024,
        }
    if measure == "stream":
        started = time.perf_counter()
        dataset = open_dataset(impl, folder, shuffle=False, remote=remote)
        seen = count_for(iter(dataset), _one, count, READ_SECONDS * 4)
        return {"rate": seen / (time.perf_counter() - started), "n": seen}
    raise ValueError(f"unknown measure {measure!r}")


# -- the orchestrating process --------------------------------------------------------------------------


def run_process(
    python: str,
    impl: str,
    measure: str,
    folder: Path,
    count: int,
    remote: str | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """One measurement in a fresh process; None (and the error on stderr) when it failed."""
    command = [
        python,
        __file__,
        "--impl",
        impl,
        "--measure",
        measure,
        "--folder",
        str(folder),
        "--count",
        str(count),
    ]
    if remote:
        command += ["--remote", remote]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        print(f"[{impl} {measure} failed]\n{done.stderr[-3000:]}", file=sys.stderr, flush=True)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def best_of(runs: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The fastest rate and first-sample time of the runs, and the largest memory any of them used."""
    found = [run for run in runs if run is not None]
    if not found:
        return None
    best = dict(max(found, key=lambda run: run["rate"]))
    if "first_s" in best:
        best["first_s"] = min(run["first_s"] for run in found)
    for key in ("hwm_mb", "anon_mb"):
        if key in best:
            best[key] = max(run[key] for run in found)
    return best


class Table:
    """Rows of the results table: one measurement of one case, every implementation side by side."""

    def __init__(self, impls: list[str]) -> None:
        self.impls = impls
        self.rows: list[str] = []

    def add(
        self, case: str, label: str, values: dict[str, str], ratios: tuple[str, str], bar: str, result: str
    ) -> None:
        cells = [values.get(impl, "-") for impl in IMPLS]
        self.rows.append(
            f"| {case} | {label} | {' | '.join(cells)} | {ratios[0]} | {ratios[1]} | {bar} | {result} |"
        )
        print(self.rows[-1], flush=True)

    @staticmethod
    def header() -> str:
        names = " | ".join(NAMES[impl] for impl in IMPLS)
        return (
            f"| case | measurement | {names} | shardflow vs mosaicml | shardflow vs litdata | bar | result |"
            "\n"
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"
        )


def _rate(result: dict[str, Any] | None) -> str:
    return "error" if result is None else f"{result['rate']:,.0f}"


def _ratio(ours: float | None, theirs: float | None, lower_is_better: bool = False) -> str:
    if not ours or not theirs:
        return "-"
    return f"{(theirs / ours if lower_is_better else ours / theirs):.1f}x"


def _verdict(checks: list[bool | None]) -> str:
    """pass when every check that could be made held; n/a when none could."""
    made = [check for check in checks if check is not None]
    if not made:
        return "n/a"
    return "pass" if all(made) else "**FAIL**"


def start_moto(workdir: Path) -> Any:
    """moto's S3 server on a free port of 127.0.0.1 (the storage tests' helper)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "storage"))
    from _storage_servers import start_moto as start

    return start(workdir)


def upload_folder(endpoint: str, folder: Path, prefix: str) -> None:
    """Every file of ``folder`` to ``s3://BUCKET/prefix/``."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    client.create_bucket(Bucket=BUCKET)
    for path in sorted(folder.iterdir()):
        client.upload_file(str(path), BUCKET, f"{prefix}/{path.name}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the issue's sample counts")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per case; the best counts")
    parser.add_argument("--only", choices=["shardflow", "reference", "litdata"], help="one implementation")
    parser.add_argument("--skip-stream", action="store_true", help="skip the epoch streamed from moto's S3")
    parser.add_argument("--case", choices=list(CASES), help="one dataset's rows (the stream row is tokens')")
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--remote", help=argparse.SUPPRESS)
    parser.add_argument("--write-litdata", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_litdata:
        write_litdata(args.write_litdata, args.count, Path(args.folder))
        return
    if args.impl:
        print(json.dumps(measure_case(args.impl, args.measure, args.folder, args.count, args.remote)))
        return
    run_all(args)


def run_all(args: argparse.Namespace) -> None:
    """Write the datasets, measure every case of every implementation, print the table and the notes."""
    impls = [args.only] if args.only else list(IMPLS)
    pythons = {"shardflow": sys.executable}
    if any(impl != "shardflow" for impl in impls):
        sys.path.insert(0, str(Path(__file__).parent))
        from _reference import reference_python

        reference = reference_python()
        if reference is None:
            sys.exit("the reference venv could not be built: run bash ../shared/reference/setup.sh")
        pythons["reference"] = pythons["litdata"] = reference
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="dataset-bench-"))
    table = Table(impls)
    notes: list[str] = []
    try:
        print(f"writing the datasets into {workdir} ...", file=sys.stderr, flush=True)
        counts = {
            case: max(2_000, int(full * args.scale))
            for case, (_, full) in CASES.items()
            if args.case in (None, case)
        }
        for case, count in counts.items():
            started = time.perf_counter()
            write_mds(case, count, workdir / "mds" / case)
            if "litdata" in impls:
                subprocess.run(
                    [
                        pythons["litdata"],
                        __file__,
                        "--write-litdata",
                        case,
                        "--count",
                        str(count),
                        "--folder",
                        str(workdir / "litdata" / case),
                    ],
                    check=True,
                )
            print(
                f"  {case}: {count:,} samples in {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        if "tokens" in counts:
            link_repeated(workdir / "mds" / "tokens", workdir / "mds" / "tokens_big", BIG_FACTOR)
        print(table.header(), flush=True)
        for case, count in counts.items():
            measure_local(args, case, count, impls, pythons, workdir, table, notes)
        stream = not args.skip_stream and args.case in (None, "tokens")
        if stream and ("shardflow" in impls or "reference" in impls):
            measure_stream(args, impls, pythons, workdir, table)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    print()
    print(
        f"- best of {args.repeat} fresh processes per cell (memory: the largest of them); 1-minute load "
        f"average {load_before[0]:.1f} before, {load_after[0]:.1f} after; {os.cpu_count()} CPUs."
    )
    for note in notes:
        print(f"- {note}")


def measure_local(
    args: argparse.Namespace,
    case: str,
    count: int,
    impls: list[str],
    pythons: dict[str, str],
    workdir: Path,
    table: Table,
    notes: list[str],
) -> None:
    """The rows of one locally cached dataset."""
    big = count * BIG_FACTOR

    def folder(impl: str, name: str = case) -> Path:
        return workdir / ("litdata" if impl == "litdata" else "mds") / name

    def run(
        measure: str, only: list[str] | None = None, name: str = case
    ) -> dict[str, dict[str, Any] | None]:
        chosen = [impl for impl in impls if only is None or impl in only]
        runs: dict[str, list[dict[str, Any] | None]] = {impl: [] for impl in chosen}
        for _ in range(args.repeat):  # interleaved, so that a busy moment hurts every implementation alike
            for impl in chosen:
                runs[impl].append(run_process(pythons[impl], impl, measure, folder(impl, name), count))
        return {impl: best_of(found) for impl, found in runs.items()}

    label = f"{case} ({count:,})"
    for measure, title, floor in (
        ("order", "one process, in order", 300_000),
        ("shuffle", "one process, shuffled", 250_000),
    ):
        found = run(measure)
        ours, lit = _value(found, "shardflow"), _value(found, "litdata")
        table.add(
            label,
            f"{title}, samples/s",
            {i: _rate(r) for i, r in found.items()},
            (_ratio(ours, _value(found, "reference")), _ratio(ours, lit)),
            f">= {floor:,}/s and >= 3x litdata",
            _verdict(
                [None if ours is None else ours >= floor, None if not (ours and lit) else ours >= 3 * lit]
            ),
        )
        if measure == "order":
            first = {impl: r["first_s"] if r else None for impl, r in found.items()}
    loader = run("loader")
    ours, ref, lit = (_value(loader, impl) for impl in IMPLS)
    table.add(
        label,
        f"DataLoader {WORKERS} workers, batch {BATCH}, shuffled, samples/s",
        {i: _rate(r) for i, r in loader.items()},
        (_ratio(ours, ref), _ratio(ours, lit)),
        ">= 20x mosaicml and >= 2.5x litdata",
        _verdict(
            [
                None if not (ours and ref) else ours >= 20 * ref,
                None if not (ours and lit) else ours >= 2.5 * lit,
            ]
        ),
    )
    if "shardflow" in impls:
        plain = run("loader_samples", ["shardflow"])
        table.add(
            label,
            "... shardflow with batch_reads=False, samples/s",
            {"shardflow": _rate(plain["shardflow"])},
            (_ratio(_value(plain, "shardflow"), ref), _ratio(_value(plain, "shardflow"), lit)),
            "-",
            "-",
        )
        loader["shardflow (batch_reads=False)"] = plain["shardflow"]
    starts = ", ".join(f"{NAMES.get(i, i)} {r['first_batch_s']:.2f} s" for i, r in loader.items() if r)
    notes.append(f"{case}: time to the DataLoader's first batch (worker start-up, not in its rate): {starts}")
    found = run("random")
    ours = _value(found, "shardflow")
    table.add(
        label,
        "random ds[i], samples/s",
        {i: _rate(r) for i, r in found.items()},
        (_ratio(ours, _value(found, "reference")), _ratio(ours, _value(found, "litdata"))),
        ">= 150,000/s",
        _verdict([None if ours is None else ours >= 150_000]),
    )
    ours_first = first.get("shardflow")
    table.add(
        label,
        "constructor to first sample, s (fresh process)",
        {i: "error" if s is None else f"{s:.3f}" for i, s in first.items()},
        (_ratio(ours_first, first.get("reference"), True), _ratio(ours_first, first.get("litdata"), True)),
        "<= 0.3 s",
        _verdict([None if ours_first is None else ours_first <= 0.3]),
    )
    memory = {impl: r for impl, r in loader.items() if impl in IMPLS}
    table.add(
        label,
        f"worker peak RSS MB (peak RssAnon), DataLoader, {count:,}-sample index",
        {i: _memory(r) for i, r in memory.items()},
        ("-", "-"),
        "-",
        "-",
    )
    if case != "tokens":
        return
    notes.append(
        f"the {big:,}-sample index lists the {count:,}-sample dataset's shards {BIG_FACTOR} times; its "
        f"DataLoader run reads at most {count:,} samples, like the smaller one's, so that both map as "
        "much shard data; the mapped shard pages count in VmHWM, not in RssAnon (with one canonical node "
        "py1e's block is 4M samples, so the bigger index's reads spread over more shards' pages)"
    )
    runs: dict[str, list[dict[str, Any] | None]] = {impl: [] for impl in impls if impl != "litdata"}
    for _ in range(args.repeat):
        for impl in runs:
            runs[impl].append(
                run_process(pythons[impl], impl, "loader_big", folder(impl, "tokens_big"), count)
            )
    bigger = {impl: best_of(found) for impl, found in runs.items()}
    small, large = memory.get("shardflow"), bigger.get("shardflow")
    independent = None
    if small and large:
        # The worker's own memory: mapped shard pages are page cache, shared by every process of the node
        # and reclaimable, and how many the shuffle touches depends on its block size, not on the worker.
        independent = large["anon_mb"] <= small["anon_mb"] * 1.1
    table.add(
        f"tokens ({big:,})",
        f"worker peak RSS MB (peak RssAnon), DataLoader, {big:,}-sample index",
        {i: _memory(r) for i, r in bigger.items()},
        ("-", "-"),
        f"private memory (RssAnon) within 10% of the {count:,}-sample index's",
        _verdict([independent]),
    )


def _value(found: dict[str, dict[str, Any] | None], impl: str) -> float | None:
    result = found.get(impl)
    return None if result is None else float(result["rate"])


def _memory(result: dict[str, Any] | None) -> str:
    if result is None:
        return "error"
    return f"{result['hwm_mb']:,.0f} ({result['anon_mb']:,.0f})"


def measure_stream(
    args: argparse.Namespace, impls: list[str], pythons: dict[str, str], workdir: Path, table: Table
) -> None:
    """One epoch in order from moto's S3 server into an empty cache, per implementation that reads MDS."""
    count = max(2_000, int(STREAM_SAMPLES * args.scale))
    source = workdir / "stream-source"
    write_mds("tokens", count, source, size_limit=STREAM_SHARD_BYTES)
    server = start_moto(workdir)
    try:
        upload_folder(server.endpoint, source, "ds")
        env = {**CREDENTIALS, "S3_ENDPOINT_URL": server.endpoint}
        chosen = [impl for impl in impls if impl != "litdata"]
        runs: dict[str, list[dict[str, Any] | None]] = {impl: [] for impl in chosen}
        for r in range(args.repeat):
            for impl in chosen:
                cache = workdir / f"stream-cache-{impl}-{r}"
                runs[impl].append(
                    run_process(pythons[impl], impl, "stream", cache, count, f"s3://{BUCKET}/ds", env)
                )
                shutil.rmtree(cache, ignore_errors=True)
    finally:
        server.stop()
    found = {impl: best_of(r) for impl, r in runs.items()}
    ours, ref = _value(found, "shardflow"), _value(found, "reference")
    shards = len(list(source.glob("*.mds")))
    table.add(
        f"tokens ({count:,}, {shards} shards of 8 MiB, moto S3)",
        "one epoch streamed cold in one process, in order, samples/s (from the constructor)",
        {i: _rate(r) for i, r in found.items()},
        (_ratio(ours, ref), "-"),
        "-",
        "-",
    )


if __name__ == "__main__":
    main()
