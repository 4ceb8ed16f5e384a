"""One data-parallel rank as a real process: build a StreamingDataset, iterate a StreamingDataLoader, report.

Run as ``python _dataset_rank.py CONFIG_JSON``; the test modules start one per rank (``test_distributed``,
``test_s3``, ``test_sources_parquet``, ``test_sources_tar_litdata``). The config's keys:

- ``remote``, ``local``, ``batch_size``, ``workers``: the dataset and loader (``shuffle=True``,
  ``num_canonical_nodes=2``, ``shuffle_seed`` given or 17);
- ``streams``: instead of ``remote``/``local``, a list of ``Stream`` keyword arguments; ``format`` names a
  source (``"parquet"``, ``"webdataset"``, ``"litdata"``, ``"files"``, ...) and ``format_options``, when
  given, configures it (``{"shard_bytes": 1}`` makes ``ParquetSource(shard_bytes=1)``);
- ``id_key``: the column (default ``"id"``) whose values, made JSON-able, stand for a batch's samples in
  ``batches``; ``collate``: ``"list"`` collates nothing (a batch is ``{"samples": [sample, ...]}``);
- ``keep_samples``: pickle every batch as the loader yields it (first epoch) into ``samples_file`` (the
  report's path with ``.pkl``), for the test to compare with the source;
- ``mode``: how the rank learns its world: ``"gloo"`` (``init_process_group`` over TCP on 127.0.0.1 with
  ``rank``/``world_size``/``port``; the parent sets only ``LOCAL_WORLD_SIZE``), ``"torchrun"``
  (``init_process_group("gloo")`` from the variables torchrun sets), ``"env"`` (the parent set
  ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``LOCAL_WORLD_SIZE``, or nothing: one process) or ``"world"``
  (``World(...)`` passed to the dataset, no variables);
- ``cache_limit``, ``predownload``, ``shuffle_block_size``, ``epoch_size``: passed to the dataset when given;
- ``stop_after``: stop after this many batches and save ``loader.state_dict()`` into the report;
- ``state_at``: save ``loader.state_dict()`` into the report after this many batches, and read on (a trainer
  checkpointing mid-epoch);
- ``state_in``: a JSON file of a state dict to resume from before iterating;
- ``wait_for``: a file to wait for (created by the test) before iterating;
- ``check_values``: compare every sample's columns with how the test wrote them;
- ``epochs``: iterate this many epochs (default 1; ``batches`` is the first, ``epochs`` all of them);
- ``sync_epochs``: after each epoch, ``all_reduce`` the samples yielded (as a trainer's collectives, which
  hang when ranks disagree on the epoch's length) into ``totals``;
- ``plain``: iterate torch's own ``DataLoader`` (``batch_size``, ``workers``) instead of StreamingDataLoader;
- ``context``, ``persistent``: the loader's ``multiprocessing_context`` and ``persistent_workers``;
- ``build_before_init``: construct the dataset before ``init_process_group`` (report ``len_before``);
- ``try_worlds``: instead of iterating, construct a dataset with each ``[rank, world_size, local_rank,
  local_world_size]`` override and report which constructions raised what;
- ``out``: where the JSON report goes (``{rank}`` is replaced by ``RANK``): ``batches`` (each batch's ids),
  ``world``, ``state``, ``bad``, ``cache`` (the rank process's ``cache_stats()``), ``len``, ``totals``
  (per epoch, the fewest and most samples any rank yielded).
"""

from __future__ import annotations

import faulthandler
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_env(**extra: object) -> dict[str, str]:
    """This environment without any launcher variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_rank(config: dict, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start one rank process; its stdout and stderr go to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, __file__, json.dumps(config)], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def finish(processes: list[tuple[subprocess.Popen[bytes], dict, Path]], timeout: float) -> list[dict]:
    """Wait for every rank (all within ``timeout`` seconds), then read their reports.

    A rank that hangs is killed (by its own pid) and fails the test with every rank's log.
    """
    deadline = time.monotonic() + timeout
    hung = []
    for process, _, _ in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            hung.append(process.pid)
    if hung:
        dump_and_kill([process for process, _, _ in processes])
    logs = "\n".join(
        f"--- {log.name} (exit {p.returncode}):\n{log.read_text()[-6000:]}" for p, _, log in processes
    )
    assert not hung, f"ranks {hung} did not finish within {timeout} s (a hang):\n{logs}"
    failed = [p.pid for p, _, _ in processes if p.returncode != 0]
    assert not failed, f"ranks {failed} failed:\n{logs}"
    return [json.loads(Path(config["out"]).read_text()) for _, config, _ in processes]


def dump_and_kill(processes: list[subprocess.Popen[bytes]]) -> None:
    """Make each running rank and its DataLoader workers print their stacks into the log, then kill them."""
    import psutil

    running = [p for p in processes if p.poll() is None]
    family = []
    for process in running:
        try:
            family += [process.pid, *(c.pid for c in psutil.Process(process.pid).children(recursive=True))]
        except psutil.NoSuchProcess:
            pass
    signal_all(family, signal.SIGUSR1)
    time.sleep(1)
    signal_all(family, signal.SIGKILL)
    for process in running:
        process.wait(10)


def signal_all(pids: list[int], signum: int) -> None:
    """Send ``signum`` to each of ``pids`` that still runs."""
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def run_ranks(
    configs: list[dict], envs: list[dict[str, str]], folder: Path, timeout: float = 120
) -> list[dict]:
    """Run one process per config at once, each with its environment; their reports, in order."""
    processes = []
    for k, (config, env) in enumerate(zip(configs, envs, strict=True)):
        config = {**config, "out": str(folder / f"report-{k}.json")}
        processes.append(
            (start_rank(config, env, folder / f"rank-{k}.log"), config, folder / f"rank-{k}.log")
        )
    return finish(processes, timeout)


def run_node(
    config: dict,
    ranks: int,
    folder: Path,
    env: dict[str, object] | None = None,
    state: dict | None = None,
    timeout: float = 240,
) -> list[dict]:
    """Run ``ranks`` rank processes of one node (mode ``"gloo"``: a process group over TCP on 127.0.0.1),
    each with ``config`` and this environment plus ``env``, resuming from ``state`` when given; their
    reports, in rank order."""
    folder.mkdir(parents=True, exist_ok=True)
    if state is not None:
        (folder / "state.json").write_text(json.dumps(state))
        config = {**config, "state_in": str(folder / "state.json")}
    port = free_port()
    configs = [{**config, "mode": "gloo", "rank": r, "world_size": ranks, "port": port} for r in range(ranks)]
    envs = [clean_env(LOCAL_WORLD_SIZE=ranks, **(env or {})) for _ in range(ranks)]
    reports = run_ranks(configs, envs, folder, timeout)
    for rank, report in enumerate(reports):
        assert report["world"] == [rank, ranks, rank, ranks], f"rank {rank}'s world"
    return reports


def kept_batches(report: dict) -> list[Any]:
    """The batches a rank run with ``keep_samples`` yielded, as it yielded them."""
    return pickle.loads(Path(report["samples_file"]).read_bytes())


def collate_list(batch: list[Any]) -> dict[str, list[Any]]:
    """Collate nothing (samples of bytes and arrays of several shapes), in a mapping whose first value's
    length the loader counts as the batch's samples."""
    return {"samples": batch}


def batch_ids(batch: dict, key: str) -> list[Any]:
    """The JSON-able values of column ``key`` in ``batch`` (a tensor's numbers, strings, decoded bytes)."""
    values = [sample[key] for sample in batch["samples"]] if "samples" in batch else batch[key]
    values = values.tolist() if hasattr(values, "tolist") else list(values)
    return [v.tolist() if hasattr(v, "tolist") else v.decode() if isinstance(v, bytes) else v for v in values]


def make_stream(spec: dict) -> Any:
    """A ``Stream`` from its keyword arguments, ``format_options`` configuring the source ``format`` names."""
    from shardflow.dataset import Stream
    from shardflow.dataset.sources import get_source

    spec = dict(spec)
    options = spec.pop("format_options", None)
    if options is not None:
        spec["format"] = type(get_source(spec["format"]))(**options)
    return Stream(**spec)


def expected_sample(i: int) -> tuple[list[int], str]:
    """Sample ``i`` as ``tests/dataset/conftest.py::token_sample`` writes it."""
    return list(range(i, i + 8)), f"sample {i}"


def main() -> int:
    config = json.loads(sys.argv[1])
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test's stack dump of a hang
    from shardflow.dataset import DatasetConfigError, StreamingDataLoader, StreamingDataset, World

    mode = config["mode"]
    report: dict = {"pid": os.getpid()}

    def init() -> None:
        import torch.distributed as dist

        if mode == "gloo":
            dist.init_process_group(
                "gloo",
                init_method=f"tcp://127.0.0.1:{config['port']}",
                rank=config["rank"],
                world_size=config["world_size"],
            )
        elif mode == "torchrun":
            dist.init_process_group("gloo")

    def make(world: World | None) -> StreamingDataset:
        if "streams" in config:
            where: dict[str, Any] = {"streams": [make_stream(spec) for spec in config["streams"]]}
        else:
            where = {"remote": config["remote"], "local": config["local"]}
        return StreamingDataset(
            **where,
            shuffle=True,
            shuffle_seed=config.get("shuffle_seed", 17),
            batch_size=config["batch_size"],
            num_canonical_nodes=2,
            world=world,
            **{
                k: config[k]
                for k in ("cache_limit", "predownload", "shuffle_block_size", "epoch_size")
                if k in config
            },
        )

    early = None
    if config.get("build_before_init"):
        early = make(None)
        report["len_before"] = len(early)
    init()
    if config.get("try_worlds"):
        results = []
        for values in config["try_worlds"]:
            try:
                ds = make(World(*values))
                results.append({"ok": True, "length": len(ds)})
            except DatasetConfigError as exc:
                results.append({"ok": False, "error": type(exc).__name__, "message": str(exc)})
        report["tried"] = results
    else:
        world = None
        if mode == "world":
            r, n, lr, lws = (
                config["rank"],
                config["world_size"],
                config["local_rank"],
                config["local_world_size"],
            )
            world = World(rank=r, world_size=n, local_rank=lr, local_world_size=lws)
        dataset = early if early is not None else make(world)
        w = dataset.world
        report["world"] = [w.rank, w.world_size, w.local_rank, w.local_world_size]
        report["len"] = len(dataset)
        options = {"batch_size": config["batch_size"], "num_workers": config["workers"]}
        if config.get("context"):
            options["multiprocessing_context"] = config["context"]
        if config.get("persistent"):
            options["persistent_workers"] = True
        if config.get("collate") == "list":
            options["collate_fn"] = collate_list
        if config.get("plain"):
            from torch.utils.data import DataLoader

            loader = DataLoader(dataset, **options)
        else:
            loader = StreamingDataLoader(dataset, **options)
        if config.get("state_in"):
            loader.load_state_dict(json.loads(Path(config["state_in"]).read_text()))
        wait_for = config.get("wait_for")
        if wait_for:
            while not os.path.exists(wait_for):  # the parent's own timeout ends a wait that never ends
                time.sleep(0.02)
        epochs: list[list[list[Any]]] = []
        bad: list[int] = []
        kept: list[Any] = []
        stop_after, state_at = config.get("stop_after"), config.get("state_at")
        for _ in range(config.get("epochs", 1)):
            batches: list[list[Any]] = []
            epochs.append(batches)
            for batch in loader:
                ids = batch_ids(batch, config.get("id_key", "id"))
                batches.append(ids)
                if config.get("check_values"):
                    bad.extend(wrong_values(batch, ids))
                if config.get("keep_samples") and len(epochs) == 1:
                    kept.append(batch)
                if len(batches) in (stop_after, state_at):
                    report["state"] = loader.state_dict()
                if len(batches) == stop_after:
                    break
            if config.get("sync_epochs"):
                report.setdefault("totals", []).append(all_ranks_range(sum(map(len, batches))))
        report["batches"] = epochs[0]
        report["epochs"] = epochs
        report["bad"] = bad
        report["cache"] = dataset.cache_stats()
    out = Path(config["out"].replace("{rank}", os.environ.get("RANK", "0")))
    if config.get("keep_samples"):
        report["samples_file"] = str(out.with_suffix(".pkl"))
        Path(report["samples_file"]).write_bytes(pickle.dumps(kept))
    out.write_text(json.dumps(report))
    if mode in ("gloo", "torchrun"):
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


def wrong_values(batch: dict, ids: list[int]) -> list[int]:
    """The ids of a batch whose columns differ from how the test wrote them."""
    tokens = batch["tokens"].numpy()
    bad = []
    for row, (i, text) in enumerate(zip(ids, batch["text"], strict=True)):
        want_tokens, want_text = expected_sample(i)
        if text != want_text or not np.array_equal(tokens[row], np.array(want_tokens, np.uint16)):
            bad.append(i)
    return bad


def all_ranks_range(count: int) -> list[int]:
    """The fewest and the most of ``count`` over the ranks (two all_reduce calls, as a trainer would make)."""
    import torch
    import torch.distributed as dist

    low, high = torch.tensor([count]), torch.tensor([count])
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return [int(low), int(high)]


if __name__ == "__main__":
    sys.exit(main())
