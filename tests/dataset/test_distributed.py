"""Elastic determinism with real rank processes: the same global batches for any nodes x ranks x workers.

Every rank is its own process (``_dataset_rank.py``), learning its world from torch.distributed (gloo over
TCP on 127.0.0.1), from the launcher's environment variables, or from ``World(...)``. Each node has its own
cache folder. Step ``s`` of the run is every rank's ``s``-th batch, concatenated in rank order; the shuffle
package promises the same samples per step for a fixed global batch size (``packages/shuffle/README.md``,
"Guarantees"), so the per-device batch size is ``GLOBAL_BATCH // ranks``. Within a step the ranks' order
legitimately differs between shapes, so steps are compared as sorted lists.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from ._dataset_rank import clean_env, finish, free_port, run_ranks, start_rank
from .conftest import write_tokens

NUM_SAMPLES = 1001  # odd: two canonical nodes of 501 rows, so the epoch carries the documented padding
GLOBAL_BATCH = 8
FULL_STEPS = NUM_SAMPLES // GLOBAL_BATCH
SHAPES = [(1, 1, 0), (1, 1, 2), (1, 2, 2), (2, 2, 1), (2, 1, 4)]  # nodes, ranks per node, workers
# Seconds for a whole group of ranks (a rank takes about 5 s on an idle 2-core machine); only a hang nears it.
TIMEOUT = 240


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,001 token samples in about 10 MDS shards."""
    return write_tokens(tmp_path_factory.mktemp("distributed") / "remote", NUM_SAMPLES)


def shape_configs(remote: Path, folder: Path, shape: tuple[int, int, int], mode: str, **extra: object):
    """One config and environment per rank of ``shape``, ranks filling nodes in order, a cache per node."""
    nodes, per_node, workers = shape
    world_size = nodes * per_node
    port = free_port()
    configs, envs = [], []
    for rank in range(world_size):
        node, local_rank = divmod(rank, per_node)
        config = {
            "remote": str(remote),
            "local": str(folder / f"node{node}"),
            "batch_size": GLOBAL_BATCH // world_size,
            "workers": workers,
            "mode": mode,
            "rank": rank,
            "world_size": world_size,
            "local_rank": local_rank,
            "local_world_size": per_node,
            "port": port,
            **extra,
        }
        if mode == "env":
            env = clean_env(
                RANK=rank, WORLD_SIZE=world_size, LOCAL_RANK=local_rank, LOCAL_WORLD_SIZE=per_node
            )
        elif mode == "gloo":  # rank and size from the process group; only the node grouping from the launcher
            env = clean_env(LOCAL_WORLD_SIZE=per_node)
        else:
            env = clean_env()
        configs.append(config)
        envs.append(env)
    return configs, envs


def run_shape(
    remote: Path, folder: Path, shape: tuple[int, int, int], mode: str, **extra: object
) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    configs, envs = shape_configs(remote, folder, shape, mode, **extra)
    reports = run_ranks(configs, envs, folder, TIMEOUT)
    nodes, per_node, _ = shape
    for rank, report in enumerate(reports):
        assert report["world"] == [rank, nodes * per_node, rank % per_node, per_node], f"rank {rank}'s world"
    return reports


def global_steps(reports: list[dict]) -> list[list[int]]:
    """Step ``s``: every rank's ``s``-th batch, concatenated in rank order."""
    steps = max(len(report["batches"]) for report in reports)
    return [
        [i for report in reports if s < len(report["batches"]) for i in report["batches"][s]]
        for s in range(steps)
    ]


def check_epoch(steps: list[list[int]], ranks: int) -> None:
    """Full steps of GLOBAL_BATCH distinct samples; the tail step holds the rest plus only padding repeats."""
    assert all(len(step) == GLOBAL_BATCH for step in steps[:FULL_STEPS])
    full = [i for step in steps[:FULL_STEPS] for i in step]
    assert len(set(full)) == len(full), "a sample came twice within the full steps"
    tail = [i for step in steps[FULL_STEPS:] for i in step]
    assert set(full) | set(tail) == set(range(NUM_SAMPLES)), "the epoch missed samples"
    rest = set(range(NUM_SAMPLES)) - set(full)
    assert rest <= set(tail)
    # Padding repeats samples (to equal canonical rows, then equal ranks), at the end of the epoch only: at
    # most one per canonical node plus one per rank.
    repeats = Counter(tail) - Counter(rest)
    assert sum(repeats.values()) < 2 + ranks


def sorted_steps(steps: list[list[int]]) -> list[list[int]]:
    return [sorted(step) for step in steps[:FULL_STEPS]]


@pytest.fixture(scope="module")
def env_runs(
    remote: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[int, int, int], list[dict]]:
    """Every shape's reports, ranks told their world by RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE only."""
    base = tmp_path_factory.mktemp("env-runs")
    return {shape: run_shape(remote, base / "x".join(map(str, shape)), shape, "env") for shape in SHAPES}


def test_env_variables_give_the_same_global_batches_for_every_shape(env_runs) -> None:
    reference = global_steps(env_runs[SHAPES[0]])
    check_epoch(reference, 1)
    for shape in SHAPES[1:]:
        steps = global_steps(env_runs[shape])
        check_epoch(steps, shape[0] * shape[1])
        assert sorted_steps(steps) == sorted_steps(reference), f"world {shape} changed the global batches"
    order = [i for step in reference for i in step]
    assert order != sorted(order), "the order is shuffled"


# Each rank process costs about 4 CPU seconds (torch, numba's cached kernels in every worker): the 2x2x1
# shape runs always, the other shapes with the slow tests.
GLOO_SHAPES = [
    shape if shape == (2, 2, 1) else pytest.param(shape, marks=pytest.mark.slow) for shape in SHAPES
]


@pytest.mark.parametrize("shape", GLOO_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gloo_process_group_gives_the_same_batches(remote: Path, tmp_path: Path, env_runs, shape) -> None:
    reports = run_shape(remote, tmp_path, shape, "gloo")
    steps = global_steps(reports)
    check_epoch(steps, shape[0] * shape[1])
    assert sorted_steps(steps) == sorted_steps(global_steps(env_runs[SHAPES[0]]))
    # The same world, told another way, gives every rank exactly the same batches.
    assert [r["batches"] for r in reports] == [r["batches"] for r in env_runs[shape]]


def test_world_override_equals_the_env_variables(remote: Path, tmp_path: Path, env_runs) -> None:
    for shape in [(2, 2, 1)]:
        reports = run_shape(remote, tmp_path / "x".join(map(str, shape)), shape, "world")
        assert [r["batches"] for r in reports] == [r["batches"] for r in env_runs[shape]], f"world {shape}"


def test_world_override_that_contradicts_the_process_group_is_refused(remote: Path, tmp_path: Path) -> None:
    # A process group of 2: a data-parallel world of 3 cannot live in it; one of 1 (2-way model parallel) can.
    configs, envs = shape_configs(
        remote, tmp_path, (1, 2, 0), "gloo", try_worlds=[[0, 3, 0, 3], [0, 1, 0, 1]]
    )
    for report in run_ranks(configs, envs, tmp_path, TIMEOUT):
        refused, accepted = report["tried"]
        assert not refused["ok"] and refused["error"] == "DatasetConfigError"
        assert "torch.distributed" in refused["message"] and "2 ranks" in refused["message"]
        assert accepted == {"ok": True, "length": NUM_SAMPLES}  # each rank reads the whole epoch


def test_resume_on_fewer_nodes_continues_the_global_order(remote: Path, tmp_path: Path, env_runs) -> None:
    stop = 40
    first = run_shape(remote, tmp_path / "first", (2, 1, 2), "env", stop_after=stop)
    state = first[0]["state"]
    assert state["sample_in_epoch"] == stop * GLOBAL_BATCH and state["initial_physical_nodes"] == 2
    assert state["num_canonical_nodes"] == 2 and state["epoch"] == 0
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps(state))
    second = run_shape(remote, tmp_path / "second", (1, 1, 1), "env", state_in=str(state_file))
    steps = global_steps(first)[:stop] + global_steps(second)
    reference = global_steps(env_runs[SHAPES[0]])
    check_epoch(steps, 2)
    assert sorted_steps(steps) == sorted_steps(reference)


def test_a_rank_finishes_its_epoch_while_another_has_not_started(remote: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    configs, envs = shape_configs(remote, tmp_path, (1, 2, 2), "gloo")
    configs[0]["wait_for"] = str(go)  # rank 0 joins the process group, then waits for the test's file
    processes = []
    for k, (config, env) in enumerate(zip(configs, envs, strict=True)):
        config["out"] = str(tmp_path / f"report-{k}.json")
        processes.append(
            (start_rank(config, env, tmp_path / f"rank-{k}.log"), config, tmp_path / f"rank-{k}.log")
        )
    try:
        # Rank 1 iterates its whole epoch and exits: nothing in iteration waits for rank 0.
        (report_1,) = finish(processes[1:], TIMEOUT)
        assert processes[0][0].poll() is None and not go.exists(), "rank 0 has not iterated yet"
        go.write_text("")
        (report_0,) = finish(processes[:1], TIMEOUT)
    finally:
        for process, _, _ in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    check_epoch(global_steps([report_0, report_1]), 2)
