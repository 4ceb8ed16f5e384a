"""`shardflow plan` against measured epochs, and the time of a 512-node x 8-GPU plan of 10B samples.

    python benchmarks/plan_bench.py                      # the 4 measured configurations and the big plan
    python benchmarks/plan_bench.py --only big           # only the 512 x 8 plan's time
    python benchmarks/plan_bench.py --bandwidth 4mb      # another throttle (MiB/s)

Run it with ``python3 -m hatch run python benchmarks/plan_bench.py`` from the repository root.

Measured: the token dataset of ``benchmarks/cache_bench.py`` (``--samples`` samples of 524 bytes in about
``--shards`` shards) is uploaded to a moto S3 server on 127.0.0.1, reached through two loopback proxies:
``tests/storage/_storage_faults.py``'s ``FaultProxy`` (no faults; it counts GETs and the bytes it sends)
in front of this file's ``ThrottledProxy``, whose answers share ``--bandwidth`` bytes per second (one
link: every connection's chunks queue on it) after ``--latency`` seconds each. An epoch is
``cache_bench.run_epoch``: 1 or 2 rank processes on one cache folder, 2 DataLoader workers each,
``StreamingDataset(shuffle=True, shuffle_algo py1e, num_canonical_nodes=1, shuffle_block_size=--block,
batch_size=256, cache_limit)``, ranks stepping together (gloo all-reduce per batch). Its epoch time
(the slowest rank, from before the dataset's constructor to its last batch), the shard bytes sent and
the cache folder's peak (sampled every 50 ms) are compared with what ``plan_epoch`` predicts for the same
dataset index, world, shuffle, limit, bandwidth and latency (``startup_seconds`` 0: process start,
imports and the order's computation are not modelled).

The big plan: ``plan_epoch`` of a synthetic 10B-sample dataset (100k-sample shards of 1 KiB samples,
sizes spread lognormally) on 512 nodes x 8 ranks x 8 workers, 10 Gbit/s per node, batch 32, 2,000
samples/s per rank: one representative node simulated (64 workers' real orders). Wall time of the call.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cache_bench  # noqa: E402  (benchmarks/ import each other by plain name)

log = logging.getLogger("plan_bench")
MB = 1 << 20
CHUNK = 1 << 16
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}


class ThrottledProxy:
    """Forwards HTTP/1.1 from ``127.0.0.1:<port>`` to an upstream loopback server; every answer waits
    ``latency`` seconds, then its body goes out in 64 KiB chunks, each booked on one shared link of
    ``bandwidth`` bytes per second (first come, first served: concurrent answers share it)."""

    def __init__(self, upstream_port: int, bandwidth: float, latency: float) -> None:
        self.upstream_port, self.bandwidth, self.latency = upstream_port, bandwidth, latency
        self._lock = threading.Lock()
        self._free_at = 0.0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ThrottledProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def book(self, size: int) -> float:
        """Book ``size`` bytes on the link; the monotonic time at which they have gone through."""
        with self._lock:
            start = max(time.monotonic(), self._free_at)
            self._free_at = start + size / self.bandwidth
            return self._free_at

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    status, reason, answer = response.status, response.reason, response.getheaders()
                finally:
                    upstream.close()
                time.sleep(proxy.latency)
                self.send_response(status, reason)
                for name, value in answer:
                    if name.lower() not in HOP or (
                        name.lower() == "content-length" and self.command == "HEAD"
                    ):
                        self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                for begin in range(0, len(data), CHUNK):
                    piece = data[begin : begin + CHUNK]
                    time.sleep(max(0.0, proxy.book(len(piece)) - time.monotonic()))
                    self.wfile.write(piece)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay

        return Handler


def planned(source: Path, ranks: int, limit: int | None, args: argparse.Namespace) -> dict[str, Any]:
    """What the planner says of one configuration."""
    from shardflow.plan import PlanConfig, plan_epoch, read_dataset

    config = PlanConfig(
        nodes=1,
        ranks_per_node=ranks,
        workers_per_rank=cache_bench.WORKERS,
        batch_size=cache_bench.BATCH,
        shuffle=True,
        shuffle_algo="py1e",
        shuffle_seed=cache_bench.SEED,
        shuffle_block_size=args.block,
        num_canonical_nodes=1,
        cache_limit=limit,
        bandwidth=args.bandwidth * MB,
        latency=args.latency,
        search_limit=False,
    )
    return plan_epoch(read_dataset(str(source)), config).summary


def measure(
    moto_port: int, workdir: Path, name: str, ranks: int, limit: int | None, args: argparse.Namespace
) -> dict[str, Any]:
    """One real epoch through the throttled link (``cache_bench.run_epoch`` with ``ranks`` ranks)."""
    epoch_args = argparse.Namespace(
        block=args.block,
        predownload=None,
        cache_limit=limit,
        no_sync=False,
        timeout=600,
        samples=args.samples,
    )
    cache_bench.RANKS = ranks  # run_epoch starts this many rank processes
    with ThrottledProxy(moto_port, args.bandwidth * MB, args.latency) as throttle:
        return cache_bench.run_epoch("shardflow", sys.executable, throttle.port, workdir, name, epoch_args)


def big_plan() -> tuple[float, dict[str, Any], str]:
    """Time a 512 x 8 x 8 plan of 10B samples (the order of the shuffle package's fastest py1e)."""
    from shardflow.plan import PlanConfig, plan_epoch, synthetic_dataset
    from shardflow.shuffle import SHUFFLE_ALGOS

    algo = "py1e_fast" if "py1e_fast" in SHUFFLE_ALGOS else "py1e"
    started = time.perf_counter()
    shape = synthetic_dataset(10_000_000_000, 100_000, 1024, spread=0.2)
    config = PlanConfig(
        nodes=512, ranks_per_node=8, workers_per_rank=8, batch_size=32, shuffle_algo=algo,
        bandwidth=10e9 / 8, latency=0.03, samples_per_second=2000,
    )  # fmt: skip
    summary = plan_epoch(shape, config).summary
    return time.perf_counter() - started, summary, algo


def within(plan: float, measured: float) -> str:
    error = plan / measured - 1 if measured else float("inf")
    return f"{100 * error:+.0f}%"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=120_000, help="token samples (default 120k, 63 MB)")
    parser.add_argument("--shards", type=int, default=30, help="about this many shards")
    parser.add_argument(
        "--bandwidth", type=float, default=3.0, help="MiB/s of the throttled link (default 3)"
    )
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per request (default 0.02)")
    parser.add_argument("--block", type=int, default=8_000, help="shuffle_block_size (default 8,000 samples)")
    parser.add_argument("--limit-share", type=float, default=0.25, help="cache_limit / data (default 0.25)")
    parser.add_argument("--only", choices=("measured", "big"), help="one part only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    lines = []
    if args.only != "big":
        lines += measured_table(args)
    if args.only != "measured":
        seconds, summary, algo = big_plan()
        lines.append(
            f"512 nodes x 8 ranks x 8 workers, 10B samples ({algo}, 1 representative node of 64 workers): "
            f"planned in {seconds:.1f} s (bar: under 60 s); epoch {summary['epoch_seconds']:,.0f} s, "
            f"{summary['downloaded_bytes_per_node'] / MB:,.0f} MiB per node, first batch "
            f"{summary['time_to_first_batch_seconds']:.2f} s, stalls {100 * summary['stall_fraction']:.1f}%"
        )
    print("\n".join(lines))


def measured_table(args: argparse.Namespace) -> list[str]:
    helpers = cache_bench.bench_helpers()
    workdir = Path(tempfile.mkdtemp(prefix="plan-bench-"))
    rows = []
    try:
        data = cache_bench.write_dataset(workdir / "source", args.samples, args.shards)
        limit = int(data["bytes"] * args.limit_share)
        server = helpers.start_moto(workdir)
        try:
            helpers.upload_folder(server.endpoint, workdir / "source", cache_bench.PREFIX)
            for ranks in (1, 2):
                for cap in (None, limit):
                    name = f"r{ranks}-{'limit' if cap else 'free'}"
                    log.info("measuring %s", name)
                    got = measure(server.port, workdir, name, ranks, cap, args)
                    plan = planned(workdir / "source", ranks, cap, args)
                    rows.append((ranks, cap, got, plan))
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out = [
        f"{args.samples:,} token samples in {data['shards']} shards, {data['bytes'] / MB:.1f} MiB; link "
        f"{args.bandwidth:g} MiB/s, {args.latency * 1000:g} ms per request; batch {cache_bench.BATCH}, "
        f"{cache_bench.WORKERS} workers per rank, py1e block {args.block:,}, cache_limit "
        f"{limit / MB:.1f} MiB when limited",
        "",
        "| ranks | cache_limit | epoch s: plan / measured | MiB downloaded: plan / measured "
        "| peak cache MiB: plan / measured | within 20% |",
        "| ---: | --- | --- | --- | --- | --- |",
    ]
    worst = 0.0
    for ranks, cap, got, plan in rows:
        if "error" in got:
            out.append(f"| {ranks} | {cap} | **error** {got['error']} | | | no |")
            worst = float("inf")
            continue
        pairs = [
            (plan["epoch_seconds"], got["epoch_s"]),
            (plan["downloaded_bytes_per_node"], got["shard_bytes"]),
            (plan["peak_cache_bytes"], got["peak_cache"]),
        ]
        errors = [abs(p / m - 1) for p, m in pairs]
        worst = max(worst, *errors)
        out.append(
            f"| {ranks} | {'none' if cap is None else f'{cap / MB:.1f} MiB'} "
            f"| {pairs[0][0]:.1f} / {pairs[0][1]:.1f} ({within(*pairs[0])}) "
            f"| {pairs[1][0] / MB:.1f} / {pairs[1][1] / MB:.1f} ({within(*pairs[1])}) "
            f"| {pairs[2][0] / MB:.1f} / {pairs[2][1] / MB:.1f} ({within(*pairs[2])}) "
            f"| {'yes' if max(errors) <= 0.2 else 'no'} |"
        )
    out += ["", f"largest error {100 * worst:.0f}% (bar: 20%)"]
    return out


if __name__ == "__main__":
    main()
