"""One shuffled epoch from moto's S3, cache_limit a quarter of the dataset, 2 ranks x 2 workers; a table.

    python benchmarks/cache_bench.py --repeat 3            # issue 10's run: both implementations, 3 runs each
    python benchmarks/cache_bench.py --block 0             # the libraries' default shuffle_block_size (4M)
    python benchmarks/cache_bench.py --no-sync             # ranks do not step together
    python benchmarks/cache_bench.py --samples 40000       # a smaller dataset (still ~40 shards), for a look
    python benchmarks/cache_bench.py --impl reference      # one implementation (shardflow|reference)
    python benchmarks/cache_bench.py --keep                # keep the work folder (dataset, caches, rank logs)

Run it with ``python3 -m hatch run python benchmarks/cache_bench.py`` from the repository root.

One MDS dataset of token samples (``{id: int, tokens: uint16[256]}``, about 524 bytes each, cut into
``--shards`` shards) is written by shardflow's ``MDSWriter`` and uploaded to a moto S3 server on
127.0.0.1. Every run of an implementation starts two rank processes (``RANK``, ``WORLD_SIZE=2``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE=2``, ``MASTER_ADDR``/``MASTER_PORT``) that share one empty cache
folder; each builds the implementation's ``StreamingDataset`` with the same arguments (remote, local,
``shuffle=True``, seed, ``batch_size``, ``num_canonical_nodes=1``, ``shuffle_block_size``,
``predownload`` and ``cache_limit`` = a quarter of the shards' bytes) and iterates one epoch through the
implementation's ``StreamingDataLoader`` with 2 workers. shardflow runs in this Python; mosaicml-streaming
0.13 in the venv of ../shared/reference/setup.sh (or $SHARDFLOW_REFERENCE_PYTHON), which never imports
shardflow: the script re-executes itself there with ``--rank``.

Like a training loop, the ranks take each step together: after every batch they all-reduce one number
over gloo (whether the rank still had a batch), so neither rank runs ahead of the other, as in data
parallel training (``--no-sync`` lets them run free). Without that, the two ranks' positions in the epoch
drift apart and the cache must hold both positions' shards.

S3 is reached through a counting loopback proxy in front of moto (``tests/storage/_storage_faults.py``'s
``FaultProxy``, no faults) named by ``S3_ENDPOINT_URL``; it counts every request and the answer bytes it
sends. Measured per run:

- wall s: from starting the rank processes to both having exited (imports included); "epoch s": the
  slowest rank's time from before its dataset's constructor to after its last batch.
- shard GETs and MB downloaded: GET requests of shard objects and the body bytes the proxy sent for them;
  the share of the dataset's bytes ("x data") shows re-downloads of evicted shards.
- peak cache: the cache folder's bytes (every file, temporaries included), sampled every 50 ms; then the
  same plus the files of the folder that were unlinked (evicted) but that a rank or one of its workers
  still maps or holds open, whose blocks stay taken until the last reader lets go.
- ids: each sample id read over the 4 workers; "once" when every id came exactly once, otherwise the
  missing ids and the repeated reads (the reference pads the epoch so that every device gets equal batches).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("cache_bench")

RANKS = 2
WORKERS = 2
BATCH = 256
SEED = 17
PREFIX = "cache-ds"
SAMPLE_BYTES = 524  # an MDS tokens sample: 8-byte id, 512 bytes of tokens, a 4-byte offset
IMPLS = ("shardflow", "reference")
NAMES = {"shardflow": "shardflow", "reference": "mosaicml-streaming"}
MB = 1 << 20

# -- the rank process (runs in the implementation's Python) -------------------------------------------


def rank_main(config: dict[str, Any]) -> None:
    """One rank: build the dataset and loader, iterate one epoch, write the ids read and the timings."""
    stamps = {"main": time.time()}
    import torch
    import torch.distributed as dist

    impl = config["impl"]
    if impl == "shardflow":
        from shardflow.dataset import StreamingDataLoader, StreamingDataset
    else:
        from streaming import StreamingDataLoader, StreamingDataset  # type: ignore[no-redef]
    stamps["imported"] = time.time()
    if config["sync"]:
        dist.init_process_group("gloo", init_method="env://")
    stamps["epoch"] = time.time()
    started = time.perf_counter()
    dataset = StreamingDataset(
        remote=config["remote"],
        local=config["local"],
        shuffle=True,
        shuffle_seed=SEED,
        batch_size=config["batch_size"],
        num_canonical_nodes=1,
        shuffle_block_size=config["block"] or None,
        predownload=config["predownload"],
        cache_limit=config["cache_limit"],
    )
    loader = StreamingDataLoader(dataset, batch_size=config["batch_size"], num_workers=config["workers"])
    built = time.perf_counter()
    ids: list[np.ndarray] = []
    first_batch = None
    batches = iter(loader)
    flag = torch.zeros(1)
    exhausted = False
    progress = Path(config["out"]).with_suffix(".progress")
    report_at = 0.0
    max_gap = gap_at = last_batch = 0.0
    while True:
        batch = None if exhausted else next(batches, None)
        exhausted = batch is None
        if config["sync"]:  # one step of data-parallel training: every rank waits for the others
            flag[0] = 0.0 if exhausted else 1.0
            dist.all_reduce(flag)
            if flag.item() == 0:
                break
        elif exhausted:
            break
        if batch is not None:
            ids.append(np.asarray(batch["id"]).astype(np.int64))
            now = time.perf_counter()
            if first_batch is None:
                first_batch = now
            elif now - last_batch > max_gap:  # the longest wait for a batch: a stall shows here
                max_gap, gap_at = now - last_batch, now - started
            last_batch = now
            if time.perf_counter() > report_at:  # how far a rank got, should it never finish
                progress.write_text(str(sum(len(i) for i in ids)))
                report_at = time.perf_counter() + 1.0
    ended = time.perf_counter()
    stamps["ended"] = time.time()
    del batches
    stamps["loader_closed"] = time.time()
    out = Path(config["out"])
    np.save(out.with_suffix(".npy"), np.concatenate(ids) if ids else np.zeros(0, np.int64))
    report = {
        "epoch_s": ended - started,
        "construct_s": built - started,
        "first_batch_s": None if first_batch is None else first_batch - started,
        "batches": len(ids),
        "max_gap_s": max_gap,
        "gap_at_s": gap_at,
        "stamps": stamps,
    }
    if config["sync"]:
        dist.barrier()
        dist.destroy_process_group()
    stamps["done"] = time.time()
    out.write_text(json.dumps(report))


# -- the orchestrating process ------------------------------------------------------------------------


def bench_helpers() -> Any:
    """benchmarks/dataset_bench.py: its MDS writer, moto starter and uploader."""
    sys.path.insert(0, str(Path(__file__).parent))
    import dataset_bench

    return dataset_bench


def write_dataset(folder: Path, samples: int, shards: int) -> dict[str, Any]:
    """The tokens dataset in about ``shards`` shards; its shard count and bytes."""
    size_limit = -(-samples * SAMPLE_BYTES // shards) + SAMPLE_BYTES
    bench_helpers().write_mds("tokens", samples, folder, size_limit=size_limit)
    index = json.loads((folder / "index.json").read_text())
    sizes = [shard["raw_data"]["bytes"] for shard in index["shards"]]
    return {
        "shards": len(sizes),
        "bytes": sum(sizes),
        "max_shard": max(sizes),
        "samples_per_shard": samples // len(sizes),
        "index_bytes": (folder / "index.json").stat().st_size,
    }


class CacheSampler:
    """Samples a cache folder's bytes every 50 ms from a thread; keeps the largest.

    Two sizes: the files under the folder (what ``du`` shows), and those plus the files under it that
    were unlinked but are still mapped or open in a rank or one of its workers (their blocks stay taken
    until the last reader lets go), found in ``/proc/<pid>/maps`` and ``/proc/<pid>/fd`` of ``pids`` and
    their descendants.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.prefix = str(folder) + os.sep
        self.pids: list[int] = []
        self.peak = 0  # the folder's files
        self.peak_held = 0  # plus unlinked files still mapped or open
        self.peak_unlinked = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cache-sampler", daemon=True)

    def __enter__(self) -> CacheSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def size(self) -> int:
        total = 0
        for root, _, files in os.walk(self.folder):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except FileNotFoundError:  # evicted or renamed meanwhile
                    pass
        return total

    def unlinked(self) -> int:
        """Bytes of unlinked files of the folder that a rank's process still maps or holds open."""
        import psutil

        held: dict[tuple[str, str], int] = {}
        processes = []
        for pid in self.pids:
            try:
                root = psutil.Process(pid)
                processes += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        for process in processes:
            try:
                with open(f"/proc/{process.pid}/maps") as maps:
                    for line in maps:
                        fields = line.split(maxsplit=5)
                        if (
                            len(fields) == 6
                            and fields[5].startswith(self.prefix)
                            and "(deleted)" in fields[5]
                        ):
                            begin, end = (int(x, 16) for x in fields[0].split("-"))
                            key = (fields[3], fields[4])  # device, inode
                            held[key] = max(held.get(key, 0), end - begin)
                for fd in os.listdir(f"/proc/{process.pid}/fd"):
                    link = f"/proc/{process.pid}/fd/{fd}"
                    try:
                        target = os.readlink(link)
                        if target.startswith(self.prefix) and target.endswith("(deleted)"):
                            info = os.stat(link)
                            key = (
                                f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}",
                                str(info.st_ino),
                            )
                            held[key] = max(held.get(key, 0), info.st_size)
                    except OSError:
                        pass
            except OSError:  # the process ended meanwhile
                pass
        return sum(held.values())

    def _sample(self) -> None:
        size, unlinked = self.size(), self.unlinked()
        self.peak = max(self.peak, size)
        self.peak_unlinked = max(self.peak_unlinked, unlinked)
        self.peak_held = max(self.peak_held, size + unlinked)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.05)
        self._sample()


def clean_reference_shm(python: str) -> None:
    """mosaicml-streaming's shared memory left by an earlier run (its own helper, in its venv)."""
    subprocess.run(
        [python, "-c", "from streaming.base.util import clean_stale_shared_memory as c; c()"],
        check=True,
        capture_output=True,
    )


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Kill a rank started in its own session, with its DataLoader workers (its process group)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)


def run_epoch(
    impl: str,
    python: str,
    moto_port: int,
    workdir: Path,
    name: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One epoch of one implementation over 2 rank processes sharing an empty cache; what it measured."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "storage"))
    from _storage_faults import FaultProxy
    from _storage_servers import free_port

    helpers = bench_helpers()
    run_dir = workdir / name
    cache = run_dir / "cache"
    cache.mkdir(parents=True)
    if impl == "reference":
        clean_reference_shm(python)
    launcher = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    base = {k: v for k, v in os.environ.items() if k not in launcher}
    port = free_port()
    result: dict[str, Any] = {"impl": impl, "name": name}
    proxy = FaultProxy(moto_port)
    proxy.server.handle_error = quiet_error  # type: ignore[method-assign]  # a client's closed connection
    with proxy, CacheSampler(cache) as sampler:
        base.update(helpers.CREDENTIALS, S3_ENDPOINT_URL=proxy.endpoint)
        processes = []
        result["spawned"] = time.time()
        started = time.perf_counter()
        for rank in range(RANKS):
            config = {
                "impl": impl,
                "remote": f"s3://{helpers.BUCKET}/{PREFIX}",
                "local": str(cache),
                "batch_size": BATCH,
                "workers": WORKERS,
                "block": args.block,
                "predownload": args.predownload,
                "cache_limit": args.cache_limit,
                "sync": not args.no_sync,
                "out": str(run_dir / f"rank-{rank}.json"),
            }
            env = {
                **base,
                "RANK": str(rank),
                "WORLD_SIZE": str(RANKS),
                "LOCAL_RANK": str(rank),
                "LOCAL_WORLD_SIZE": str(RANKS),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
            }
            with open(run_dir / f"rank-{rank}.log", "wb") as out:
                processes.append(
                    subprocess.Popen(
                        [python, __file__, "--rank", json.dumps(config)],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                        start_new_session=True,
                    )
                )
        sampler.pids = [process.pid for process in processes]
        deadline = started + args.timeout
        for process in processes:
            try:
                process.wait(max(0.1, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                pass
        wall = time.perf_counter() - started
        hung = [process.pid for process in processes if process.poll() is None]
        for process in processes:
            stop_group(process)
        with proxy._lock:
            requests = dict(proxy.requests)
            sent = dict(proxy.sent_bytes)
    result["wall_s"] = wall
    result["peak_cache"] = sampler.peak
    result["peak_held"] = sampler.peak_held
    result["peak_unlinked"] = sampler.peak_unlinked
    shard_gets = {path: n for (method, path), n in requests.items() if method == "GET" and ".mds" in path}
    result["shard_gets"] = sum(shard_gets.values())
    result["shards_fetched"] = len(shard_gets)
    result["shard_bytes"] = sum(n for (method, path), n in sent.items() if method == "GET" and ".mds" in path)
    result["requests"] = sum(requests.values())
    result["heads"] = sum(n for (method, _), n in requests.items() if method == "HEAD")
    failed = [p.pid for p in processes if p.returncode not in (0, None) and p.pid not in hung]
    if hung or failed:
        logs = [(run_dir / f"rank-{rank}.log").read_text(errors="replace") for rank in range(RANKS)]
        read = [run_dir / f"rank-{rank}.progress" for rank in range(RANKS)]
        done = sum(int(path.read_text() or 0) for path in read if path.exists())
        result["error"] = (
            f"no end within {args.timeout:.0f} s ({done:,} samples read by then)"
            if hung
            else error_line(logs)
        )
        for rank, text in enumerate(logs):
            log.warning("%s %s rank %d log (tail):\n%s", impl, name, rank, text[-3000:])
        return result
    reports = [json.loads((run_dir / f"rank-{rank}.json").read_text()) for rank in range(RANKS)]
    ids = np.concatenate([np.load(run_dir / f"rank-{rank}.npy") for rank in range(RANKS)])
    counts = np.bincount(ids, minlength=args.samples)
    result["epoch_s"] = max(report["epoch_s"] for report in reports)
    result["stamps"] = [report["stamps"] for report in reports]
    result["reports"] = reports
    result["ended"] = result["spawned"] + wall
    result["read"] = int(ids.size)
    result["missing"] = int((counts == 0).sum())
    result["repeated"] = int(ids.size - (counts > 0).sum())
    result["out_of_range"] = int(counts.size - args.samples)
    return result


PHASES = (
    ("python start", "spawned", "main"),
    ("imports", "main", "imported"),
    ("gloo", "imported", "epoch"),
    ("epoch", "epoch", "ended"),
    ("loader shutdown", "ended", "loader_closed"),
    ("barrier", "loader_closed", "done"),
    ("exit", "done", "exited"),
)


def phases(result: dict[str, Any]) -> str:
    """Where the wall time went: each phase's seconds, the slowest rank's (from the ranks' clock stamps)."""
    if "stamps" not in result:
        return "-"
    parts = []
    for label, begin, end in PHASES:
        spans = []
        for stamps in result["stamps"]:
            marks = {**stamps, "spawned": result["spawned"], "exited": result["ended"]}
            spans.append(marks[end] - marks[begin])
        parts.append(f"{label} {max(spans):.1f}")
    gaps = ", ".join(
        f"{report['first_batch_s']:.1f} s to the first batch, longest wait {report['max_gap_s']:.2f} s "
        f"at {report['gap_at_s']:.1f} s"
        for report in result["reports"]
    )
    return ", ".join(parts) + f" (ranks: {gaps})"


def quiet_error(request: Any, client_address: Any) -> None:
    """The proxy's handler for a connection a client reset: logged at debug level, not printed."""
    log.debug("proxy: %s from %s", sys.exc_info()[1], client_address)


def error_line(logs: list[str]) -> str:
    """The last exception line among the ranks' logs."""
    for text in logs:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        for line in reversed(lines):
            if "Error" in line or "Exception" in line:
                return line[:160]
    return "exited with an error"


def row(result: dict[str, Any], data: dict[str, Any], limit: int) -> str:
    """One table row of one run."""
    mb = result["shard_bytes"] / MB
    cells = [
        NAMES[result["impl"]],
        result["name"].rsplit("-", 1)[-1],
        f"{result['wall_s']:.1f}",
        f"{result['epoch_s']:.1f}" if "epoch_s" in result else "-",
        f"{result['shard_gets']} ({result['shards_fetched']} of {data['shards']})",
        f"{mb:,.1f}",
        f"{result['shard_bytes'] / data['bytes']:.2f}",
        f"{result['peak_cache'] / MB:,.2f} ({result['peak_cache'] / limit:.3f})",
        f"{result['peak_held'] / MB:,.2f} ({result['peak_held'] / limit:.3f})",
    ]
    if "error" in result:
        cells.append(f"**error**: {result['error']}")
    elif result["missing"] == 0 and result["repeated"] == 0 and result["out_of_range"] == 0:
        cells.append(f"{result['read']:,}, each once")
    else:
        cells.append(
            f"{result['read']:,}: {result['missing']:,} missing, {result['repeated']:,} repeated"
            + (f", {result['out_of_range']} out of range" if result["out_of_range"] else "")
        )
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| impl | run | wall s | epoch s | shard GETs (distinct) | MB downloaded | x data "
    "| peak cache folder MB (x limit) | ... with unlinked files still mapped | ids read |\n"
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
)


def verdict(results: list[dict[str, Any]]) -> list[str]:
    """The bar: shardflow faster than the reference, and no more bytes downloaded than it."""
    ok = {impl: [r for r in results if r["impl"] == impl and "error" not in r] for impl in IMPLS}
    lines = []
    for impl in IMPLS:
        runs = [r for r in results if r["impl"] == impl]
        if not runs:
            continue
        good = ok[impl]
        if good:
            lines.append(
                f"{NAMES[impl]}: {len(good)} of {len(runs)} runs finished; best wall "
                f"{min(r['wall_s'] for r in good):.1f} s, epoch {min(r['epoch_s'] for r in good):.1f} s; "
                f"MB downloaded {min(r['shard_bytes'] for r in good) / MB:,.1f}-"
                f"{max(r['shard_bytes'] for r in good) / MB:,.1f}"
            )
        else:
            lines.append(f"{NAMES[impl]}: none of {len(runs)} runs finished")
    ours, theirs = ok["shardflow"], ok["reference"]
    if ours and theirs:
        faster = min(r["wall_s"] for r in ours) < min(r["wall_s"] for r in theirs)
        fewer = max(r["shard_bytes"] for r in ours) <= min(r["shard_bytes"] for r in theirs)
        ratio = min(r["wall_s"] for r in theirs) / min(r["wall_s"] for r in ours)
        lines.append(
            f"bar (best wall faster than the reference's: {'held' if faster else 'NOT held'}, {ratio:.2f}x; "
            f"most bytes <= the reference's fewest: {'held' if fewer else 'NOT held'}): "
            f"{'pass' if faster and fewer else 'FAIL'}"
        )
    elif ours and [r for r in results if r["impl"] == "reference"]:
        lines.append("bar: the reference finished no run in this configuration; nothing to compare")
    return lines


def run_all(args: argparse.Namespace) -> None:
    """Write and upload the dataset, run every implementation ``--repeat`` times, print the table."""
    impls = [args.impl] if args.impl else list(IMPLS)
    pythons = {"shardflow": sys.executable}
    if "reference" in impls:
        from _reference import reference_python

        reference = reference_python()
        if reference is None:
            sys.exit("the reference venv could not be built: run bash ../shared/reference/setup.sh")
        pythons["reference"] = reference
    helpers = bench_helpers()
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="cache-bench-"))
    results: list[dict[str, Any]] = []
    try:
        log.info("writing %d samples into %s", args.samples, workdir / "source")
        data = write_dataset(workdir / "source", args.samples, args.shards)
        limit = args.cache_limit or data["bytes"] // 4
        args.cache_limit = limit
        args.block = 2 * data["samples_per_shard"] if args.block is None else args.block
        args.predownload = args.predownload if args.predownload is not None else 8 * BATCH
        log.info(
            "%d shards, %.1f MB (largest %.2f MB); cache_limit %d bytes (%.1f MB)",
            data["shards"],
            data["bytes"] / MB,
            data["max_shard"] / MB,
            limit,
            limit / MB,
        )
        server = helpers.start_moto(workdir)
        try:
            helpers.upload_folder(server.endpoint, workdir / "source", PREFIX)
            for r in range(args.repeat):  # interleaved: a busy moment hurts every implementation alike
                for impl in impls:
                    log.info("%s run %d of %d ...", impl, r + 1, args.repeat)
                    result = run_epoch(impl, pythons[impl], server.port, workdir, f"{impl}-{r + 1}", args)
                    log.info("  %s", row(result, data, limit))
                    log.info("  seconds: %s", phases(result))
                    results.append(result)
                    if not args.keep:
                        shutil.rmtree(workdir / f"{impl}-{r + 1}" / "cache", ignore_errors=True)
        finally:
            server.stop()
    finally:
        if args.keep:
            log.info("kept %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    block = (
        f"{args.block:,} samples (~{args.block / data['samples_per_shard']:.1f} shards)"
        if args.block
        else "the library default (4M samples: the whole dataset is one block)"
    )
    print(
        f"{args.samples:,} token samples in {data['shards']} shards, {data['bytes'] / MB:.1f} MB "
        f"(largest shard {data['max_shard'] / MB:.2f} MB); {RANKS} ranks x {WORKERS} workers, batch {BATCH}, "
        f"num_canonical_nodes 1, shuffle py1e seed {SEED}, shuffle_block_size {block}, "
        f"predownload {args.predownload:,}, "
        f"cache_limit {limit:,} bytes ({limit / data['bytes']:.2f} of the data); ranks "
        f"{'step together (gloo all-reduce per batch)' if not args.no_sync else 'run free'}; 1-minute load "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after; {os.cpu_count()} CPUs"
    )
    print()
    print(HEADER)
    for result in results:
        print(row(result, data, limit))
    print()
    for line in verdict(results):
        print(f"- {line}")
    for result in results:
        print(f"- {NAMES[result['impl']]} run {result['name'].rsplit('-', 1)[-1]}, seconds: {phases(result)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=240_000, help="token samples in the dataset")
    parser.add_argument("--shards", type=int, default=40, help="about this many shards")
    parser.add_argument("--repeat", type=int, default=2, help="epochs per implementation, interleaved")
    parser.add_argument("--impl", choices=IMPLS, help="one implementation")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--cache-limit", type=int, help="bytes (default: a quarter of the shards' bytes)")
    parser.add_argument(
        "--block",
        type=int,
        help="shuffle_block_size (default: two shards' samples; 0: the library's default)",
    )
    parser.add_argument("--predownload", type=int, help=f"samples (default {8 * BATCH}, 8 batches)")
    parser.add_argument("--no-sync", action="store_true", help="ranks do not all-reduce after each batch")
    parser.add_argument("--timeout", type=float, default=600, help="seconds an epoch may take")
    parser.add_argument("--rank", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank:
        rank_main(json.loads(args.rank))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    sys.path.insert(0, str(Path(__file__).parent))
    run_all(args)


if __name__ == "__main__":
    main()
