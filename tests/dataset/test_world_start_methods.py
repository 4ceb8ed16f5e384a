"""One world, settled once: DataLoader workers started by ``spawn`` or ``forkserver`` read their rank's share.

Two gloo ranks x 2 DataLoader workers, each rank a real process (``_dataset_rank.py``) that builds its
dataset *before* ``init_process_group`` (as a script does before Lightning starts its processes), then
iterates 2 epochs: with ``spawn``, torch's own ``DataLoader`` (a fresh worker copy each epoch); with
``forkserver``, ``StreamingDataLoader`` with persistent workers. A spawned worker sees no process group
and no ``RANK``: it must take the world from its owner, or it reads the whole dataset. Each run costs
about 20 s of start-ups (every spawned worker imports torch and numba), so one run per start method is
shared by the assertions below.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from shardflow.dataset import StreamingDataset

from ._dataset_rank import run_ranks
from .conftest import write_tokens
from .test_distributed import shape_configs

NUM_SAMPLES = 200  # 2 canonical nodes x 2 ranks divide it: every sample exactly once per epoch
EPOCHS = 2
TIMEOUT = 300  # seconds for a whole run; only a hang nears it
RUNS = {
    "spawn": {"context": "spawn", "plain": True},
    "forkserver": {"context": "forkserver", "persistent": True},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    base = tmp_path_factory.mktemp("start-methods")
    remote = write_tokens(base / "remote", NUM_SAMPLES)
    reports = {}
    for method, extra in RUNS.items():
        folder = base / method
        folder.mkdir()
        configs, envs = shape_configs(
            remote,
            folder,
            (1, 2, 2),
            "gloo",
            batch_size=8,
            build_before_init=True,
            epochs=EPOCHS,
            sync_epochs=True,
            **extra,
        )
        reports[method] = run_ranks(configs, envs, folder, TIMEOUT)
    return reports


def shares(reports: list[dict], epoch: int) -> list[list[int]]:
    """Each rank's ids of ``epoch``, in the order it yielded them."""
    return [[i for batch in report["epochs"][epoch] for i in batch] for report in reports]


@pytest.mark.parametrize("method", RUNS)
def test_ranks_read_disjoint_shares_and_every_sample_once_per_epoch(runs, method: str) -> None:
    reports = runs[method]
    orders = []
    for epoch in range(EPOCHS):
        first, second = shares(reports, epoch)
        for rank, share in enumerate((first, second)):
            assert len(share) == len(set(share)) == NUM_SAMPLES // 2, f"epoch {epoch}: rank {rank}'s share"
        assert not set(first) & set(second), f"epoch {epoch}: both ranks read some samples"
        assert set(first) | set(second) == set(range(NUM_SAMPLES))
        orders.append(first + second)
    assert orders[0] != orders[1], "the second epoch repeated the first one's order"


@pytest.mark.parametrize("method", RUNS)
def test_a_dataset_built_before_the_process_group_counts_the_world_in_force(runs, method: str) -> None:
    for rank, report in enumerate(runs[method]):
        assert report["len_before"] == NUM_SAMPLES  # alone, before init_process_group
        assert report["len"] == NUM_SAMPLES // 2  # the world in force when asked
        assert report["world"] == [rank, 2, rank, 2]
        # Every rank yielded as many samples as len() said, each epoch: collectives stay in step.
        assert report["totals"] == [[NUM_SAMPLES // 2] * 2] * EPOCHS


def test_torch_dataloader_and_streaming_dataloader_give_the_same_epochs(runs) -> None:
    for epoch in range(EPOCHS):
        assert shares(runs["spawn"], epoch) == shares(runs["forkserver"], epoch), f"epoch {epoch}"


def test_a_copy_unpickled_outside_a_dataloader_worker_finds_its_own_world(
    tokens_remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lightning's ddp_spawn pickles the script's dataset into each rank process: that copy is the rank's
    # own, and its world is the rank's, not the world of the process that pickled it.
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    ds = StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), shuffle=True, batch_size=5)
    assert len(ds) == 1000
    data = pickle.dumps(ds)
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    rank = pickle.loads(data)
    assert len(rank) == 500 and rank.world.rank == 1
    ids = [int(sample["id"]) for sample in rank]
    assert len(ids) == 500 and ids == rank.worker_sample_ids(0).tolist()
