"""The ``shardflow plan`` command (also ``python -m shardflow.plan``): plan an epoch, print or save it.

The command's own output goes to stdout (a table, or ``--json``: the stable dict of ``Plan.to_dict`` plus
``report``); diagnostics go to logging on stderr (``-v``); an error prints one line naming the argument,
path or URL at fault and exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from typing import Any

from shardflow.plan.errors import PlanError, PlanInputError
from shardflow.plan.shapes import parse_bytes, parse_count

__all__ = ["parser", "run", "main", "parse_bandwidth", "parse_seconds"]

logger = logging.getLogger("shardflow.plan")

_BITS = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}
_RATE = re.compile(r"^\s*([0-9][0-9_,]*(?:\.[0-9]*)?)\s*([a-z]+)\s*(?:/s|ps)?\s*$")


def parse_bandwidth(text: str) -> float:
    """Bytes per second from ``"100mb"`` (MiB/s, powers of 1024 as cache_limit), ``"10gbit"`` (decimal bits
    per second), or a plain number of bytes per second.

    Raises:
        PlanInputError: Anything else (the message names ``--bandwidth``).
    """
    found = _RATE.match(text.lower())
    if found and found.group(2) in _BITS:
        value = float(found.group(1).replace(",", "").replace("_", "")) * _BITS[found.group(2)] / 8
    else:
        value = parse_bytes("--bandwidth", text.lower().removesuffix("/s").removesuffix("ps"))
    if value <= 0:
        raise PlanInputError(f"--bandwidth {text!r} must be more than 0")
    return float(value)


def parse_seconds(name: str, text: str) -> float:
    """Seconds from ``"0.03"``, ``"30ms"`` or ``"2s"``.

    Raises:
        PlanInputError: Anything else, or a negative time (the message names ``name``).
    """
    lowered = text.strip().lower()
    scale = 1e-3 if lowered.endswith("ms") else 1.0
    try:
        value = float(lowered.removesuffix("ms").removesuffix("s")) * scale
    except ValueError:
        raise PlanInputError(f"{name} {text!r} is not a time such as 0.03, 30ms or 2s") from None
    if not 0 <= value < float("inf"):
        raise PlanInputError(f"{name} {text!r} must be 0 or more seconds")
    return value


def parser(prog: str = "shardflow plan") -> argparse.ArgumentParser:
    """The ``plan`` argument parser."""
    cli = argparse.ArgumentParser(
        prog=prog,
        description="Simulate one training epoch of StreamingDataset with the library's own sample order: "
        "downloads, cache use, stalls, time to first batch, the smallest workable cache_limit, "
        "shuffle quality.",
    )
    cli.add_argument("-v", "--verbose", action="store_true", help="log diagnostics on stderr")
    data = cli.add_argument_group("the dataset: an index, or a synthetic description")
    data.add_argument(
        "source", nargs="?", metavar="URL_OR_PATH", help="a storage URL, a dataset folder or its index.json"
    )
    data.add_argument("--split", default=None, help="a sub-folder holding the split")
    data.add_argument("--keep-zip", action="store_true", help="compressed shards keep their compressed files")
    data.add_argument(
        "--synthetic", metavar="SAMPLES", help="plan a made-up dataset of this many samples (e.g. 10b)"
    )
    data.add_argument("--shard-samples", default="10k", help="synthetic: samples per shard (default 10k)")
    data.add_argument(
        "--sample-bytes", default="1kb", help="synthetic: average bytes per sample (default 1kb)"
    )
    data.add_argument(
        "--spread", type=float, default=0.0, help="synthetic: lognormal sigma of shard sizes (default 0)"
    )
    data.add_argument("--compression-ratio", type=float, default=1.0,
                      help="synthetic: compressed / raw bytes (default 1: uncompressed)")  # fmt: skip
    world = cli.add_argument_group("the world and the loader")
    world.add_argument("--nodes", type=int, default=1, help="physical nodes (default 1)")
    world.add_argument("--ranks-per-node", type=int, default=1, help="ranks (devices) per node (default 1)")
    world.add_argument("--workers", type=int, default=2, help="DataLoader workers per rank (default 2)")
    world.add_argument("--batch-size", type=int, default=32, help="per-device batch size (default 32)")
    world.add_argument("--no-shuffle", action="store_true", help="read in order")
    world.add_argument("--shuffle-algo", default="py1e", help="py1e (default), py1br, py1s, py2s, naive, ...")
    world.add_argument("--shuffle-seed", type=int, default=9176)
    world.add_argument("--block-size", default=None, help="shuffle_block_size (default: the library's)")
    world.add_argument(
        "--canonical-nodes", type=int, default=None, help="num_canonical_nodes (default: the library's)"
    )
    world.add_argument("--partition-algo", default="relaxed")
    world.add_argument("--epoch", type=int, default=0)
    world.add_argument("--cache-limit", default=None, help="bytes per node, e.g. 50gb (default: none)")
    world.add_argument("--predownload", default=None, help="samples fetched ahead (default 8 x batch size)")
    world.add_argument(
        "--prefetch-factor", type=int, default=2, help="bundles a worker runs ahead (default 2)"
    )
    link = cli.add_argument_group("the network and the trainer")
    link.add_argument(
        "--bandwidth", default="100mb", help="per node: 100mb (MiB/s) or 10gbit (default 100mb)"
    )
    link.add_argument("--latency", default="20ms", help="before a download's first byte (default 20ms)")
    link.add_argument("--samples-per-second", type=float, default=None,
                      help="the most a rank's trainer consumes (default: no limit)")  # fmt: skip
    link.add_argument("--startup", default="0", help="seconds before workers read (default 0)")
    out = cli.add_argument_group("the simulation and its output")
    out.add_argument("--simulate-nodes", type=int, default=None,
                     help="nodes to simulate (default: all up to 256 workers, else 1)")  # fmt: skip
    search = out.add_mutually_exclusive_group()
    search.add_argument("--find-limit", dest="find_limit", action="store_true", default=None,
                        help="search the smallest full-speed cache_limit (default: small plans)")  # fmt: skip
    search.add_argument("--no-find-limit", dest="find_limit", action="store_false")
    out.add_argument("--json", action="store_true", help="print a JSON object")
    out.add_argument("--report", metavar="PATH", default=None, help="write the plots: a .png or .html file")
    return cli


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Plan what ``args`` describe; write the report if asked. Returns the dict ``--json`` prints.

    Raises:
        PlanError: A bad argument, an unreadable index, a missing plotting dependency (named).
    """
    from shardflow.plan.report import write_report
    from shardflow.plan.shapes import read_dataset, synthetic_dataset
    from shardflow.plan.simulate import PlanConfig, plan_epoch

    if (args.source is None) == (args.synthetic is None):
        raise PlanInputError("give a dataset (URL_OR_PATH) or --synthetic SAMPLES, not both and not neither")
    if args.source is not None:
        shape = read_dataset(args.source, args.split, keep_zip=args.keep_zip)
    else:
        shape = synthetic_dataset(
            parse_count("--synthetic", args.synthetic),
            parse_count("--shard-samples", args.shard_samples),
            parse_bytes("--sample-bytes", args.sample_bytes),
            spread=args.spread,
            compression_ratio=args.compression_ratio,
        )
    config = PlanConfig(
        nodes=args.nodes,
        ranks_per_node=args.ranks_per_node,
        workers_per_rank=args.workers,
        batch_size=args.batch_size,
        shuffle=not args.no_shuffle,
        shuffle_algo=args.shuffle_algo,
        shuffle_seed=args.shuffle_seed,
        shuffle_block_size=None if args.block_size is None else parse_count("--block-size", args.block_size),
        num_canonical_nodes=args.canonical_nodes,
        partition_algo=args.partition_algo,
        epoch=args.epoch,
        cache_limit=None if args.cache_limit is None else parse_bytes("--cache-limit", args.cache_limit),
        predownload=None if args.predownload is None else parse_count("--predownload", args.predownload),
        bandwidth=parse_bandwidth(args.bandwidth),
        latency=parse_seconds("--latency", args.latency),
        samples_per_second=args.samples_per_second,
        prefetch_factor=args.prefetch_factor,
        startup_seconds=parse_seconds("--startup", args.startup),
        simulated_nodes=args.simulate_nodes,
        search_limit=args.find_limit,
    )
    plan = plan_epoch(shape, config)
    result = plan.to_dict()
    result["report"] = None if args.report is None else str(write_report(plan, args.report))
    result["table"] = _rows(plan)
    return result


def _rows(plan: Any) -> list[list[str]]:
    from shardflow.plan.report import summary_rows

    return [[label, value] for label, value in summary_rows(plan)]


def _print_table(result: dict[str, Any]) -> None:
    width = max(len(label) for label, _ in result["table"])
    lines = [f"{label:<{width}}  {value}" for label, value in result["table"]]
    if result["report"]:
        lines.append(f"{'report':<{width}}  {result['report']}")
    print("\n".join(lines))


def main(argv: Sequence[str] | None = None, prog: str = "python -m shardflow.plan") -> int:
    """Run the command; returns the exit status (0 ok, 1 an error, 2 a usage error)."""
    args = parser(prog).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="shardflow: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if args.verbose:
        logging.getLogger("shardflow").setLevel(logging.DEBUG)
    try:
        result = run(args)
    except PlanError as exc:
        print(f"shardflow: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"shardflow: error: {exc}", file=sys.stderr)
        return 1
    try:
        if args.json:
            print(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=2))
        else:
            _print_table(result)
    except BrokenPipeError:  # stdout closed early (| head): not an error of ours
        return 0
    return 0
