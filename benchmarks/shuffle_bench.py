"""Epoch sample order with shardflow.shuffle and mosaicml-streaming side by side; print a markdown table.

    python benchmarks/shuffle_bench.py                      # the issue's run: 10M and 100M samples
    python benchmarks/shuffle_bench.py --sizes 10M --algos py1e

Every case (implementation, algorithm, size) runs in fresh processes (the fastest of ``--repeat`` runs
counts: the machine is shared) that report their wall time and peak RSS (``ru_maxrss``). The data set
is shards of 10k samples over 8 canonical nodes, read by 2 nodes x 8 ranks x 8 workers with a batch of
32, shuffled with the default block size. Columns:

* epoch: the whole epoch's 5-D array, as the reference's ``generate_work`` (random batching) builds it
  in one leader process per node: resampling, partition, shuffle, id mapping.
* worker: one worker's ids (node 1, rank 3, worker 5). The reference's only way is the whole epoch,
  then a slice; shardflow computes the slice alone (``SampleOrder.worker_sample_ids``).

``py1e``, ``py1br``, ``py1s`` and ``naive`` are the reference's orders, value for value; ``*_fast`` are
shardflow's own (compared with the reference's algorithm of the base name). shardflow is timed after its
kernels are loaded (a tiny warm-up in the same process); ``cold start`` is
a new process that imports shardflow.shuffle and computes a worker's slice of a small epoch with the
on-disk JIT cache filled, ``compile`` the same with an empty cache. The reference runs in the venv built
by ../shared/reference/setup.sh (or $SHARDFLOW_REFERENCE_PYTHON).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _reference import reference_python

SHARD = 10_000
CANONICAL = 8
NODES, RANKS, WORKERS, BATCH = 2, 8, 8, 32
WORKER = (1, 3, 5)  # node, rank of node, worker of rank
ALGOS = ("py1e", "py1e_fast", "py1br", "py1br_fast", "py1s", "py1s_fast", "naive", "naive_fast")
SEED = 9176

_SHARDFLOW_CASE = """
import json, resource, sys, time
import numpy as np
from shardflow.shuffle import SampleOrder, WorldShape
algo, samples, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
world = WorldShape({nodes}, {ranks}, {workers})
def order(total):
    sizes = np.full(total // {shard}, {shard})
    return SampleOrder(sizes, num_canonical_nodes={canonical}, batch_size={batch},
                       shuffle=True, shuffle_algo=algo, shuffle_seed={seed})
small = order(40 * {shard})
small.epoch_sample_ids(0, world)
small.worker_sample_ids(0, world, *{worker})
big = order(samples)
start = time.perf_counter()
if mode == "epoch":
    ids = big.epoch_sample_ids(0, world)
else:
    ids = big.worker_sample_ids(0, world, *{worker})
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "ids": int(ids.size)}}))
"""

_REFERENCE_CASE = """
import json, logging, resource, sys, time, types, warnings
import numpy as np
warnings.simplefilter("ignore")
logging.disable(logging.WARNING)
from streaming.base.batching.random import generate_work_random_batching
from streaming.base.dataset import StreamingDataset
from streaming.base.world import World
algo, samples = sys.argv[1], int(sys.argv[2])
sizes = np.full(samples // {shard}, {shard}, np.int64)
# The attributes StreamingDataset.resample_streams and generate_work read, for one unweighted stream.
dataset = types.SimpleNamespace(
    shuffle_seed={seed}, sampling_method="balanced", sampling_granularity=1, epoch_seed_change=True,
    num_streams=1, shard_offset_per_stream=np.zeros(1, np.int64), shards_per_stream=np.array([sizes.size]),
    samples_per_shard=sizes, sample_offset_per_shard=np.cumsum(sizes) - sizes,
    streams=[types.SimpleNamespace(choose=samples)], num_canonical_nodes={canonical}, batch_size={batch},
    partition_algo="relaxed", epoch_size=samples, initial_physical_nodes=None, shuffle=True,
    shuffle_algo=algo, shuffle_block_size=max(4_000_000 // {canonical}, 1 << 18))
dataset.resample_streams = types.MethodType(StreamingDataset.resample_streams, dataset)
world = World({nodes}, {ranks}, {workers}, 0)
start = time.perf_counter()
epoch = generate_work_random_batching(dataset, world, 0, 0)
epoch_seconds = time.perf_counter() - start
ids = epoch[{worker}[0], {worker}[1], {worker}[2]].flatten()
worker_seconds = time.perf_counter() - start
print(json.dumps({{"seconds": epoch_seconds, "worker_seconds": worker_seconds,
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ids": int(ids.size)}}))
"""

_QUALITY = """
import json, sys
import numpy as np
if sys.argv[1] == "shardflow":
    from shardflow.shuffle import get_shuffle
else:
    from streaming.base.shuffle import get_shuffle
samples, shard, block = 4_000_000, {shard}, 1 << 18
report = {{}}
for algo in sys.argv[2].split(","):
    ids = get_shuffle(algo, np.full(samples // shard, shard), 1, {seed}, 0, block)
    where = np.empty(samples, np.int64)
    where[ids] = np.arange(samples)
    span = where.reshape(-1, shard)
    first, last = span.min(axis=1), span.max(axis=1)
    live = np.zeros(samples + 1, np.int64)
    np.add.at(live, first, 1)
    np.add.at(live, last + 1, -1)
    shards = ids // shard
    report[algo] = {{
        "batch": float(np.mean([len(np.unique(shards[i:i + 32])) for i in range(0, samples, 32 * 97)])),
        "spread": float((last - first).mean()),
        "live": int(np.cumsum(live)[:-1].max()),
    }}
print(json.dumps(report))
"""

_COLD_START = """
import time
start = time.perf_counter()
import numpy as np
from shardflow.shuffle import SampleOrder, WorldShape
order = SampleOrder(np.full(100, 1000), num_canonical_nodes=8, batch_size=32, shuffle=True)
order.worker_sample_ids(0, WorldShape(2, 8, 8), 1, 3, 5)
print(time.perf_counter() - start)
"""


def _fill(template: str) -> str:
    return template.format(
        shard=SHARD,
        canonical=CANONICAL,
        nodes=NODES,
        ranks=RANKS,
        workers=WORKERS,
        batch=BATCH,
        seed=SEED,
        worker=WORKER,
    )


def run_case(python: str, script: str, *args: str) -> dict:
    """Run one case in a fresh process; return its JSON report."""
    result = subprocess.run([python, "-c", script, *args], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{python} {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def best_of(repeat: int, python: str, script: str, *args: str) -> dict:
    """The fastest of ``repeat`` runs of a case (the machine is shared), with the highest peak RSS."""
    runs = [run_case(python, script, *args) for _ in range(repeat)]
    best = min(runs, key=lambda run: run["seconds"])
    return {**best, "rss": max(run["rss"] for run in runs)}


def cold_start(env: dict[str, str] | None = None) -> float:
    """Seconds from process start to a worker's slice (interpreter start-up included)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", _COLD_START], check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def parse_count(text: str) -> int:
    """``10M`` -> 10_000_000, ``1.5k`` -> 1500."""
    scale = {"k": 1_000, "M": 1_000_000, "B": 1_000_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if text[-1] in "kMB" else text) * scale)


def _gib(value: float) -> str:
    return f"{value / 2**30:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="10M,100M", help="comma-separated sample counts (default 10M,100M)"
    )
    parser.add_argument("--algos", default=",".join(ALGOS), help="comma-separated shuffle algorithms")
    parser.add_argument("--no-reference", action="store_true", help="skip mosaicml-streaming")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the fastest counts (default 3)")
    args = parser.parse_args()
    reference = None if args.no_reference else reference_python()
    if not args.no_reference and reference is None:
        print(
            "mosaicml-streaming reference venv not found: run ../shared/reference/setup.sh", file=sys.stderr
        )
    ours, theirs = _fill(_SHARDFLOW_CASE), _fill(_REFERENCE_CASE)

    cold_start()  # fill the on-disk cache
    warm = min(cold_start() for _ in range(3))
    with tempfile.TemporaryDirectory() as empty_cache:
        compile_seconds = cold_start({**os.environ, "NUMBA_CACHE_DIR": empty_cache})
    print(
        f"cold start with the on-disk JIT cache: {warm:.2f} s "
        f"(empty cache, compiling: {compile_seconds:.1f} s)"
    )

    rows = []
    references: dict[tuple[str, int], dict] = {}  # a fast variant is compared with its base algorithm
    for size in args.sizes.split(","):
        samples = parse_count(size)
        for algo in args.algos.split(","):
            epoch = best_of(args.repeat, sys.executable, ours, algo, str(samples), "epoch")
            worker = best_of(args.repeat, sys.executable, ours, algo, str(samples), "worker")
            base = algo.removesuffix("_fast")
            if reference and (base, samples) not in references:
                references[base, samples] = best_of(args.repeat, reference, theirs, base, str(samples))
            ref = references.get((base, samples))
            rows.append((size, algo, epoch, worker, ref))
            print(
                f"{size} {algo}: shardflow epoch {epoch['seconds']:.2f} s, worker {worker['seconds']:.3f} s"
                + (f"; reference {ref['seconds']:.2f} s" if ref else ""),
                file=sys.stderr,
            )

    print()
    print(
        "Shuffle quality, 4M samples in shards of 10k, one canonical node, block 2**18: distinct shards in a"
    )
    print("batch of 32 (more is better), mean spread of a shard's samples, most shards live at once (cache):")
    print()
    print(
        "| algo | shards per batch: shardflow | reference | shard spread: shardflow | reference "
        "| live shards: shardflow | reference |"
    )
    print("|---|---|---|---|---|---|---|")
    algos = args.algos.split(",")
    quality = run_case(sys.executable, _fill(_QUALITY), "shardflow", ",".join(algos))
    bases = sorted({algo.removesuffix("_fast") for algo in algos})
    theirs_quality = run_case(reference, _fill(_QUALITY), "reference", ",".join(bases)) if reference else {}
    for algo in algos:
        mine = quality[algo]
        missing = {"batch": float("nan"), "spread": float("nan"), "live": "-"}
        other = theirs_quality.get(algo.removesuffix("_fast"), missing)
        print(
            f"| {algo} | {mine['batch']:.1f} | {other['batch']:.1f} | {mine['spread']:,.0f} "
            f"| {other['spread']:,.0f} | {mine['live']} | {other['live']} |"
        )
    print()
    print(
        "| samples | algo | epoch: shardflow | epoch: reference | speed-up | epoch peak RSS: shardflow "
        "| reference | one worker: shardflow | one worker: reference | speed-up "
        "| worker peak RSS: shardflow |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size, algo, epoch, worker, ref in rows:
        ref_epoch = f"{ref['seconds']:.2f} s" if ref else "-"
        ref_rss = _gib(ref["rss"]) if ref else "-"
        ref_worker = f"{ref['worker_seconds']:.2f} s" if ref else "-"
        speed_epoch = f"{ref['seconds'] / epoch['seconds']:.1f}x" if ref else "-"
        speed_worker = f"{ref['worker_seconds'] / worker['seconds']:.0f}x" if ref else "-"
        print(
            f"| {size} | {algo} | {epoch['seconds']:.2f} s | {ref_epoch} | {speed_epoch} "
            f"| {_gib(epoch['rss'])} "
            f"| {ref_rss} | {worker['seconds'] * 1e3:.0f} ms | {ref_worker} | {speed_worker} "
            f"| {_gib(worker['rss'])} |"
        )


if __name__ == "__main__":
    main()
