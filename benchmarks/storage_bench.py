"""Download throughput from moto's S3 server on loopback: shardflow-storage next to mosaicml-streaming.

    python benchmarks/storage_bench.py                   # 200 x 8 MiB and 5,000 x 64 KiB objects
    python benchmarks/storage_bench.py --scale 0.1       # a tenth of the objects, for a quick look
    python benchmarks/storage_bench.py --write-results   # also record the table in benchmarks/RESULTS.md

One moto server holds the objects. Each implementation downloads every object of a workload to local
files with the same number of threads, in its own process (the reference from the venv of
../shared/reference/setup.sh, or $SHARDFLOW_REFERENCE_PYTHON); this script re-executes itself with
``--worker``. shardflow shares one client (one connection pool) across the threads; the reference gets
what it does in a dataset: one S3Downloader (with its own boto3 client) per thread. "client CPU" is
the CPU time of the downloading process (all its threads) per object; moto's own CPU is not in it.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MIB = 1 << 20
WORKLOADS = {"large": (200, 8 * MIB), "small": (5000, 64 << 10)}
BUCKET = "bench"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}
RESULTS = Path(__file__).with_name("RESULTS.md")


def worker(impl: str, keys: list[str], folder: Path, threads: int) -> tuple[float, float]:
    """Download ``keys`` into ``folder`` with ``threads`` threads; return (seconds, CPU seconds) taken."""
    if impl == "shardflow":
        from shardflow.storage import get_client

        client = get_client("s3://", max_pool_connections=threads)

        def fetch(key: str) -> None:
            client.download(f"s3://{BUCKET}/{key}", folder / key)
    else:
        import threading

        from streaming.base.storage.download import S3Downloader

        local = threading.local()

        def fetch(key: str) -> None:
            if not hasattr(local, "downloader"):
                local.downloader = S3Downloader()
            local.downloader.download(f"s3://{BUCKET}/{key}", str(folder / key), 60.0)

    started, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fetch, keys))
    return time.perf_counter() - started, time.process_time() - cpu


def populate(endpoint: str, count: int, size: int, prefix: str) -> list[str]:
    """Upload ``count`` random objects of ``size`` bytes; return their keys."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, config=Config(max_pool_connections=16))
    keys = [f"{prefix}/obj-{i:05d}.bin" for i in range(count)]
    payload = os.urandom(size)

    def put(key: str) -> None:
        client.put_object(Bucket=BUCKET, Key=key, Body=key.encode().ljust(64, b".") + payload[64:])

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, keys))
    return keys


def run_worker(python: str, impl: str, keys: list[str], threads: int, endpoint: str) -> tuple[float, float]:
    """Time one implementation in a fresh process; the downloaded files are removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=f"storage-bench-{impl}-"))
    try:
        env = {**os.environ, **CREDENTIALS, "S3_ENDPOINT_URL": endpoint}
        request = json.dumps({"impl": impl, "keys": keys, "folder": str(folder), "threads": threads})
        done = subprocess.run(
            [python, __file__, "--worker"],
            input=request,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{impl} worker failed:\n{done.stderr}")
        count = sum(1 for path in folder.rglob("*") if path.is_file())
        if count != len(keys):
            raise RuntimeError(f"{impl} downloaded {count} of {len(keys)} objects")
        seconds, cpu = json.loads(done.stdout.strip().splitlines()[-1])
        return float(seconds), float(cpu)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the objects of each workload")
    parser.add_argument("--threads", type=int, default=16, help="download threads, for both implementations")
    parser.add_argument("--repeat", type=int, default=3, help="runs per implementation; the best one counts")
    parser.add_argument("--write-results", action="store_true", help="record the table in RESULTS.md")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        request = json.loads(sys.stdin.read())
        print(
            json.dumps(worker(request["impl"], request["keys"], Path(request["folder"]), request["threads"]))
        )
        return

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "storage"))
    from _reference import reference_python
    from _storage_servers import start_moto

    reference = reference_python()
    if reference is None:
        raise SystemExit("the reference venv is missing: run bash ../shared/reference/setup.sh")
    os.environ.update(CREDENTIALS)
    load_before = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="storage-bench-"))
    server = start_moto(workdir)
    rows = []
    try:
        import boto3

        boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket=BUCKET)
        for name, (count, size) in WORKLOADS.items():
            count = max(1, int(count * args.scale))
            keys = populate(server.endpoint, count, size, name)
            runs: dict[str, list[tuple[float, float]]] = {"shardflow": [], "mosaicml-streaming": []}
            for _ in range(args.repeat):  # interleaved, so that a busy moment hurts both alike
                for impl, python in (("shardflow", sys.executable), ("mosaicml-streaming", reference)):
                    runs[impl].append(run_worker(python, impl, keys, args.threads, server.endpoint))
            best = {impl: min(times) for impl, times in runs.items()}
            for impl, (seconds, cpu) in best.items():
                rows.append(
                    (
                        f"{count} x {size // 1024} KiB",
                        impl,
                        args.threads,
                        seconds,
                        count * size / MIB / seconds,
                        count / seconds,
                        cpu / count * 1000,
                        best["mosaicml-streaming"][0] / seconds,
                    )
                )
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    command = "python benchmarks/storage_bench.py " + " ".join(
        arg for arg in sys.argv[1:] if arg != "--write-results"
    )
    table = [
        "| objects | implementation | threads | seconds | MiB/s | objects/s | client CPU ms/object "
        "| speed vs reference |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {w} | {i} | {t} | {s:.2f} | {mb:.0f} | {ops:.0f} | {c:.2f} | {r:.2f}x |"
            for w, i, t, s, mb, ops, c, r in rows
        ),
    ]
    print("\n".join(table))
    if args.write_results:
        ratios = {w.split(" x ")[1]: r for w, i, _, _, _, _, _, r in rows if i == "shardflow"}
        bars = [
            f"large objects at least the reference's throughput: {_held(ratios['8192 KiB'] >= 1.0)}",
            f"small objects at least 2x the reference's: {_held(ratios['64 KiB'] >= 2.0)}",
        ]
        write_section(
            "\n".join(
                [
                    f"`{command.strip()}` (best of {args.repeat} interleaved runs each), moto_server on "
                    f"127.0.0.1, {os.cpu_count()} cores shared with other work (1-minute load average "
                    f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after):",
                    "",
                    *table,
                    "",
                    *(f"- {bar}" for bar in bars),
                    "- moto's server answers every request with `Connection: close`, so no client reuses "
                    "connections against it; the reference sends two requests per object (HEAD, then GET).",
                ]
            )
        )


def _held(ok: bool) -> str:
    return "held" if ok else "**missed**"


def write_section(body: str) -> None:
    """Replace (or add) the ``## storage`` section of RESULTS.md; other sections stay as they are."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    head, marker, rest = text.partition("\n## storage\n")
    tail = ""
    if marker:
        following = rest.find("\n## ")
        tail = rest[following:] if following >= 0 else ""
    RESULTS.write_text(f"{head.rstrip()}\n\n## storage\n\n{body}\n{tail}")


if __name__ == "__main__":
    main()
