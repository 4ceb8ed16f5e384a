"""Parquet read by shardflow, Hugging Face ``datasets`` (streaming) and LitData's ``ParquetLoader``, side by
side; and the time to a first sample of a remote Parquet dataset of 1,000 files against one file's.

Usage::

    python benchmarks/parquet_bench.py FOLDER                   # both cases: about 1 GB, a few minutes
    python benchmarks/parquet_bench.py FOLDER --scale 0.02      # a quick smoke run (20 MB)
    python benchmarks/parquet_bench.py FOLDER --case first-sample

Case ``read``: a token/text table of about ``--scale`` GB is written once into ``FOLDER/table-*`` with pyarrow
(``--files`` files, row groups of 4,096 rows, snappy): each row holds ``tokens``, a fixed-size list of 512
``int32`` (``fixed_size_list<int32>[512]``, 2 KiB), and ``text``, a string of 500 to 1,500 random
letters and spaces. Each reader then reads every row once, in file order (no shuffle), in batches of
``--batch-size``, in one process (a DataLoader with no workers) and through a 2-worker loader, each
measurement in a fresh process (imports done before the clock starts), alternating ``--rounds`` times; a
reading still going after ``--limit-seconds`` stops there and counts the rows it read (marked ``*``):

- shardflow: ``StreamingDataset(local=FOLDER/table)`` (the Parquet source detected, its footer index built
  once before the timings) through ``StreamingDataLoader``: ``tokens`` comes as one tensor per batch;
- Hugging Face ``datasets``: ``load_dataset("parquet", data_files=..., streaming=True)`` with the
  ``torch`` format through torch's ``DataLoader`` (its workers split the files);
- LitData 0.2.76 (the reference venv, with polars and pyarrow beside it): ``index_parquet_dataset`` run
  once on a folder of links to the same files, then ``StreamingDataset(item_loader=ParquetLoader())``
  through its ``StreamingDataLoader`` (with ``multiprocessing_context="spawn"`` for workers: LitData
  refuses ``fork`` with this loader, as Polars' threads deadlock in forked processes).

Case ``first-sample``: moto's S3 server on 127.0.0.1 holds ``--remote-files`` small Parquet files (100 rows
each) under one prefix and one such file under another; for each, fresh processes (at least 3) time
``StreamingDataset(remote=..., local=<empty cache>)`` up to its first sample, cold (the footer index built:
a listing and one ranged read per footer, in parallel), warm (the index reused from the cache), and
published (a cold cache, the index published beside the data once by ``shardflow index URL --publish``:
a listing and one read of it).

Prints markdown tables (rows per second, median of the rounds, with the ratios and the issue's bars).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("parquet_bench")

ROWS_PER_GB = 500_000  # rows of about 2 KB once compressed (2 KiB of tokens, ~1 KB of text)
TOKENS = 512
ROW_GROUP = 4096
READERS = ("shardflow", "hf", "litdata")
NAMES = {"shardflow": "shardflow", "hf": "HF datasets (streaming)", "litdata": "LitData ParquetLoader"}
BARS = {"hf": 3.0, "litdata": 1.5}
REFERENCE_EXTRAS = ("polars>1.0.0", "pyarrow>=14")
IMPORTS = {  # run before the clock starts: what each reader imports on first use
    "shardflow": "import torch, pandas, pyarrow.parquet; from shardflow.dataset import StreamingDataLoader, "
    "StreamingDataset",
    "hf": "import torch, pandas, pyarrow.parquet, datasets",
    "litdata": "import torch, polars, pyarrow.parquet; from litdata import StreamingDataLoader, "
    "StreamingDataset; from litdata.streaming.item_loader import ParquetLoader",
}


# -- the data ------------------------------------------------------------------------------------------


def write_table(folder: Path, rows: int, files: int) -> list[Path]:
    """The table's files (``rows`` rows in ``files`` files), written once."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"part-{k:04d}.parquet" for k in range(files)]
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     ", np.uint8)
    per_file = -(-rows // files)
    for k, path in enumerate(paths):
        if path.exists():
            continue
        count = min(per_file, rows - k * per_file)
        rng = np.random.default_rng(k)
        tokens = rng.integers(0, 50_257, count * TOKENS, dtype=np.int32)
        lengths = rng.integers(500, 1500, count, dtype=np.int32)
        offsets = np.zeros(count + 1, np.int32)
        np.cumsum(lengths, out=offsets[1:])
        text = letters[rng.integers(0, len(letters), int(offsets[-1]))]
        table = pa.table(
            {
                "tokens": pa.FixedSizeListArray.from_arrays(pa.array(tokens), TOKENS),
                "text": pa.StringArray.from_buffers(
                    count, pa.py_buffer(offsets), pa.py_buffer(text.tobytes())
                ),
            }
        )
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp, row_group_size=ROW_GROUP)
        os.replace(tmp, path)
    return paths


def litdata_folder(folder: Path, paths: list[Path]) -> Path:
    """A folder of links to the table's files, for LitData to write its ``index.json`` into (shardflow
    would take an ``index.json`` beside the files for an MDS index)."""
    links = folder.with_name(folder.name + "-litdata")
    links.mkdir(parents=True, exist_ok=True)
    for path in paths:
        link = links / path.name
        if not link.exists():
            link.symlink_to(path.resolve())
    return links


# -- one measurement (run in a fresh process) ----------------------------------------------------------


def read_shardflow(folder: str, workers: int, batch_size: int) -> Any:
    """shardflow's loader."""
    from shardflow.dataset import StreamingDataLoader, StreamingDataset

    dataset = StreamingDataset(local=folder, batch_size=batch_size)
    loader = StreamingDataLoader(dataset, batch_size=batch_size, num_workers=workers)
    return loader


def read_hf(folder: str, workers: int, batch_size: int) -> Any:
    """Hugging Face ``datasets``' loader (streaming)."""
    import datasets
    import torch

    datasets.disable_progress_bars()
    files = sorted(glob.glob(os.path.join(folder, "*.parquet")))
    dataset = datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)
    loader = torch.utils.data.DataLoader(
        dataset.with_format("torch"), batch_size=batch_size, num_workers=workers
    )
    return loader


def read_litdata(folder: str, workers: int, batch_size: int) -> Any:
    """LitData's loader with its ParquetLoader (``folder`` indexed by ``index_parquet_dataset`` already)."""
    from litdata import StreamingDataLoader, StreamingDataset
    from litdata.streaming.item_loader import ParquetLoader

    dataset = StreamingDataset(folder, item_loader=ParquetLoader())
    # Polars' thread pool deadlocks in forked workers: LitData refuses 'fork' with this loader.
    context = {"multiprocessing_context": "spawn"} if workers else {}
    loader = StreamingDataLoader(dataset, batch_size=batch_size, num_workers=workers, **context)
    return loader


def index_litdata(folder: str) -> None:
    """LitData's footer index of ``folder`` (its ``index.json``), once."""
    from litdata import index_parquet_dataset

    if not os.path.exists(os.path.join(folder, "index.json")):
        index_parquet_dataset(folder)


def first_sample(remote: str, cache: str) -> float:
    """Seconds from making a shardflow dataset of ``remote`` to holding its first sample."""
    from shardflow.dataset import StreamingDataset

    started = time.perf_counter()
    dataset = StreamingDataset(remote=remote, local=cache, batch_size=1)
    next(iter(dataset))
    return time.perf_counter() - started


def measure(args: argparse.Namespace) -> None:
    """The ``--impl`` run: one measurement, printed as a JSON line."""
    if args.impl == "first-sample":
        print(json.dumps({"seconds": first_sample(args.remote, args.cache)}))
        return
    if args.impl == "publish":
        from shardflow._cli import index_source

        print(json.dumps({"published": index_source(args.remote, args.cache, publish=True)["published"]}))
        return
    if args.impl == "index-litdata":
        index_litdata(args.data)
        return
    read = {"shardflow": read_shardflow, "hf": read_hf, "litdata": read_litdata}[args.impl]
    exec(IMPORTS[args.impl], {})  # noqa: S102  (fixed strings of this file)
    started = time.perf_counter()
    rows, cut = 0, False
    for batch in read(args.data, args.workers, args.batch_size):
        rows += len(batch["text"])
        if time.perf_counter() - started > args.limit_seconds:
            cut = True
            break
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started, "cut": cut}))


# -- the driver ----------------------------------------------------------------------------------------


def run(python: str, impl: str, env: dict[str, str] | None = None, **options: Any) -> dict[str, Any] | None:
    """One ``--impl`` run in a fresh process; None (its error logged) when it failed."""
    command = [python, __file__, "--impl", impl]
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        logger.error("%s failed:\n%s", impl, done.stderr[-3000:])
        return None
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def reference_env() -> tuple[str, dict[str, str]] | None:
    """The reference venv's python and the environment that puts polars and pyarrow beside it (installed
    into a folder of their own, once, with a warning), or None without the reference."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _reference import reference_python

    python = reference_python()
    if python is None:
        return None
    extras = Path(python).parent.parent.parent / (Path(python).parent.parent.name + "-parquet-extras")
    if not (extras / ".complete").exists():
        logger.warning(
            "installing %s for LitData's ParquetLoader into %s (once)", ", ".join(REFERENCE_EXTRAS), extras
        )
        subprocess.run(
            [python, "-m", "pip", "install", "-q", "--target", str(extras), *REFERENCE_EXTRAS],
            check=True,
            capture_output=True,
        )
        (extras / ".complete").touch()
    path = os.pathsep.join(filter(None, [str(extras), os.environ.get("PYTHONPATH")]))
    return python, {"PYTHONPATH": path}


def read_case(args: argparse.Namespace) -> None:
    """The reading table."""
    rows = max(1000, int(ROWS_PER_GB * args.scale))
    files = max(2, min(args.files, rows // ROW_GROUP))
    table = args.folder / f"table-{rows}x{files}"
    paths = write_table(table, rows, files)
    size = sum(path.stat().st_size for path in paths)
    pythons: dict[str, tuple[str, dict[str, str]]] = {
        "shardflow": (sys.executable, {}),
        "hf": (sys.executable, {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}),
    }
    data = {"shardflow": str(table), "hf": str(table)}
    reference = reference_env() if "litdata" in args.only else None
    if reference is None:
        if "litdata" in args.only:
            logger.warning("no reference venv (see benchmarks/_reference.py): LitData is left out")
    else:
        pythons["litdata"] = reference
        data["litdata"] = str(litdata_folder(table, paths))
        run(reference[0], "index-litdata", reference[1], data=data["litdata"])
    pythons = {impl: found for impl, found in pythons.items() if impl in args.only}
    # shardflow's footer index, built and cached before the timings (as LitData's above).
    run(sys.executable, "shardflow", data=data["shardflow"], workers=0, batch_size=args.batch_size)
    rates: dict[tuple[str, int], list[float]] = {}
    cut: set[tuple[str, int]] = set()
    for _ in range(args.rounds):
        for workers in (0, args.workers):
            for impl, (python, env) in pythons.items():
                found = run(
                    python,
                    impl,
                    env,
                    data=data[impl],
                    workers=workers,
                    batch_size=args.batch_size,
                    limit_seconds=args.limit_seconds,
                )
                if found is None:
                    continue
                if found["cut"]:
                    cut.add((impl, workers))
                elif found["rows"] != rows:
                    logger.error("%s read %d rows, not %d", impl, found["rows"], rows)
                    continue
                rates.setdefault((impl, workers), []).append(found["rows"] / found["seconds"])
    logger.info(
        "\n%d rows (%.2f GB in %d Parquet files), batch %d, rows/s (median of %d); load average %s",
        rows,
        size / 1e9,
        files,
        args.batch_size,
        args.rounds,
        " ".join(f"{x:.1f}" for x in os.getloadavg()),
    )
    logger.info(
        "| loader | %s | shardflow vs HF (bar 3x) | shardflow vs LitData (bar 1.5x) |",
        " | ".join(NAMES[impl] for impl in READERS),
    )
    logger.info("| --- | --- | --- | --- | --- | --- |")
    for workers in (0, args.workers):
        medians = {
            impl: statistics.median(rates[impl, workers]) for impl in READERS if (impl, workers) in rates
        }
        cells = [
            f"{medians[impl]:,.0f}{'*' if (impl, workers) in cut else ''}" if impl in medians else "n/a"
            for impl in READERS
        ]
        ours = medians.get("shardflow")
        ratios = [
            f"{ours / medians[impl]:.2f}x ({'met' if ours / medians[impl] >= BARS[impl] else 'NOT met'})"
            if ours and impl in medians
            else "n/a"
            for impl in ("hf", "litdata")
        ]
        label = "one process" if workers == 0 else f"{workers} workers"
        logger.info("| %s | %s | %s |", label, " | ".join(cells), " | ".join(ratios))
    if cut:
        logger.info(
            "\n\\* stopped after %.0f s, before the end of the table: rows read / seconds", args.limit_seconds
        )


def first_sample_case(args: argparse.Namespace) -> None:
    """The first-sample table: 1,000 remote files against one."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "storage"))
    from _storage_servers import BUCKET, MOTO_CREDENTIALS, moto_bucket

    work = Path(tempfile.mkdtemp(prefix="parquet-first-"))
    try:
        with moto_bucket(work) as (server, client):
            local = work / "file.parquet"
            ids = np.arange(100)
            pq.write_table(
                pa.table(
                    {
                        "id": ids,
                        "tokens": pa.FixedSizeListArray.from_arrays(
                            pa.array(np.repeat(ids, 64).astype(np.int32)), 64
                        ),
                    }
                ),
                local,
            )
            body = local.read_bytes()
            for kind in ("", "-published"):
                client.put_object(Bucket=BUCKET, Key=f"one{kind}/part-0000.parquet", Body=body)
                for k in range(args.remote_files):
                    client.put_object(Bucket=BUCKET, Key=f"many{kind}/part-{k:04d}.parquet", Body=body)
            env = {**MOTO_CREDENTIALS, "S3_ENDPOINT_URL": server.endpoint}
            for prefix in ("one-published", "many-published"):  # what `shardflow index URL --publish` does
                run(sys.executable, "publish", env, remote=f"s3://{BUCKET}/{prefix}", cache=work / prefix)
            times: dict[tuple[str, str], list[float]] = {}
            for r in range(max(3, args.rounds)):
                for size in ("one", "many"):
                    cache = work / f"cache-{size}-{r}"
                    for state in ("cold", "warm", "published"):
                        prefix = f"{size}-published" if state == "published" else size
                        where = work / f"cache-{prefix}-{r}" if state == "published" else cache
                        found = run(
                            sys.executable, "first-sample", env, remote=f"s3://{BUCKET}/{prefix}", cache=where
                        )
                        if found is not None:
                            times.setdefault((size, state), []).append(found["seconds"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info(
        "\nTime to the first sample from moto S3 on 127.0.0.1 (seconds, median of %d fresh processes; "
        "load average %s)",
        max(3, args.rounds),
        " ".join(f"{x:.1f}" for x in os.getloadavg()),
    )
    logger.info("| index | 1 file | %d files | ratio (bar <= 2x) |", args.remote_files)
    logger.info("| --- | --- | --- | --- |")
    labels = {
        "cold": "built (cold cache, nothing published)",
        "warm": "reused (warm cache)",
        "published": "published beside the data (cold cache)",
    }
    for state, label in labels.items():
        if ("one", state) not in times or ("many", state) not in times:
            logger.info("| %s | n/a | n/a | n/a |", label)
            continue
        one, many = statistics.median(times["one", state]), statistics.median(times["many", state])
        verdict = "met" if many <= 2 * one else "NOT met"
        logger.info("| %s | %.3f | %.3f | %.2fx (%s) |", label, one, many, many / one, verdict)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path, nargs="?", help="where the table is written (once)")
    parser.add_argument("--case", choices=["read", "first-sample", "both"], default="both")
    parser.add_argument("--scale", type=float, default=1.0, help="GB of the table (default 1)")
    parser.add_argument("--files", type=int, default=16, help="files of the table (default 16)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the loader case (default 2)")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size (default 256)")
    parser.add_argument("--rounds", type=int, default=1, help="measurements of each, alternating (default 1)")
    parser.add_argument(
        "--limit-seconds", type=float, default=45.0, help="a reading stops after this long (default 45)"
    )
    parser.add_argument(
        "--only",
        type=lambda text: text.split(","),
        default=list(READERS),
        help="readers of the read case, comma-separated (default: shardflow,hf,litdata)",
    )
    parser.add_argument("--remote-files", type=int, default=1000, help="files of the remote case (1000)")
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--remote", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.impl:
        measure(args)
        return
    if args.case in ("read", "both"):
        if args.folder is None:
            parser.error("the read case needs FOLDER")
        read_case(args)
    if args.case in ("first-sample", "both"):
        first_sample_case(args)


if __name__ == "__main__":
    main()
