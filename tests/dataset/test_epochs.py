"""Epochs advance under every loader, batch sizes agree, and a resume is exact or refused.

torch's own ``DataLoader`` gives its workers a fresh copy of the dataset at each ``iter()`` (unless
``persistent_workers``); the epoch ledger (``shardflow.dataset._epochs``) makes each ``iter()`` the next
epoch anyway, the same one ``StreamingDataLoader`` runs.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

from shardflow.dataset import (
    DatasetConfigError,
    StateDictError,
    StreamingDataLoader,
    StreamingDataset,
    World,
)
from shardflow.dataset._epochs import EpochLedgerError, epochs_folder, sweep
from shardflow.shuffle import SampleOrder, WorldShape

from .test_resume import take_ids

BATCH = 8
LOADERS = {
    "0 workers": {"num_workers": 0},
    "2 workers": {"num_workers": 2},
    "2 persistent workers": {"num_workers": 2, "persistent_workers": True},
}


def _dataset(remote: Path, local: Path, batch_size: int | None = BATCH, **kwargs) -> StreamingDataset:
    return StreamingDataset(
        remote=str(remote), local=str(local), shuffle=True, batch_size=batch_size, **kwargs
    )


@pytest.fixture(scope="module")
def reference_epochs(tokens_remote: Path, tmp_path_factory: pytest.TempPathFactory) -> list[list[int]]:
    """Three epochs as StreamingDataLoader yields them."""
    loader = StreamingDataLoader(
        _dataset(tokens_remote, tmp_path_factory.mktemp("reference")), batch_size=BATCH, num_workers=2
    )
    epochs = [take_ids(loader) for _ in range(3)]
    assert len({tuple(epoch) for epoch in epochs}) == 3
    return epochs


@pytest.mark.parametrize("options", LOADERS.values(), ids=LOADERS.keys())
@pytest.mark.parametrize("set_epoch", [False, True], ids=["iter", "set_epoch"])
def test_torch_dataloader_runs_the_next_epoch_at_each_iter(
    tokens_remote: Path, tmp_path: Path, reference_epochs: list[list[int]], options: dict, set_epoch: bool
) -> None:
    ds = _dataset(tokens_remote, tmp_path)
    loader = DataLoader(ds, batch_size=BATCH, **options)
    for epoch, expected in enumerate(reference_epochs):
        if set_epoch:
            ds.set_epoch(epoch)
        assert take_ids(loader) == expected, f"epoch {epoch}"
        # The owner's copy knows the epoch its workers ran.
        assert ds.state_dict(len(expected), True)["epoch"] == epoch


def test_loaders_of_one_dataset_share_its_epochs(
    tokens_remote: Path, tmp_path: Path, reference_epochs: list[list[int]]
) -> None:
    ds = _dataset(tokens_remote, tmp_path)
    assert take_ids(StreamingDataLoader(ds, batch_size=BATCH, num_workers=2)) == reference_epochs[0]
    assert take_ids(DataLoader(ds, batch_size=BATCH, num_workers=2)) == reference_epochs[1]
    assert [int(s["id"]) for s in ds] == reference_epochs[2]  # the dataset iterated in this process


def test_a_copy_of_a_dataset_counts_its_own_epochs(
    tokens_remote: Path, tmp_path: Path, reference_epochs: list[list[int]]
) -> None:
    ds = _dataset(tokens_remote, tmp_path)
    assert take_ids(DataLoader(ds, batch_size=BATCH, num_workers=2)) == reference_epochs[0]
    twin = copy.deepcopy(ds)
    assert take_ids(DataLoader(twin, batch_size=BATCH, num_workers=2)) == reference_epochs[0]
    assert take_ids(DataLoader(ds, batch_size=BATCH, num_workers=2)) == reference_epochs[1]


def test_persistent_workers_follow_set_epoch_and_load_state_dict(
    tokens_remote: Path, tmp_path: Path, reference_epochs: list[list[int]]
) -> None:
    ds = _dataset(tokens_remote, tmp_path)
    loader = DataLoader(ds, batch_size=BATCH, num_workers=2, persistent_workers=True)
    assert take_ids(loader) == reference_epochs[0]
    ds.set_epoch(2)  # the workers' copies are older: they learn it from the ledger
    assert take_ids(loader) == reference_epochs[2]
    ds.load_state_dict({**ds.state_dict(), "epoch": 1, "sample_in_epoch": 3 * BATCH})
    assert take_ids(loader) == reference_epochs[1][3 * BATCH :]
    assert take_ids(loader) == reference_epochs[2]


@pytest.mark.parametrize("workers", [0, 2])
def test_torch_dataloader_resumes_exactly_from_the_owners_state(
    tokens_remote: Path, tmp_path: Path, reference_epochs: list[list[int]], workers: int
) -> None:
    ds = _dataset(tokens_remote, tmp_path)
    loader = DataLoader(ds, batch_size=BATCH, num_workers=workers)
    take_ids(loader)
    head = take_ids(loader, 7)
    state = ds.state_dict(len(head))
    assert state["epoch"] == 1 and state["sample_in_epoch"] == 7 * BATCH
    resumed = _dataset(tokens_remote, tmp_path)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    assert head + take_ids(DataLoader(resumed, batch_size=BATCH, num_workers=workers)) == reference_epochs[1]


RESUME_SCRIPT = """
import json, sys
from shardflow.dataset import StreamingDataLoader, StreamingDataset
remote, local, state_path, out_path = sys.argv[1:5]
ds = StreamingDataset(remote=remote, local=local, shuffle=True)
loader = StreamingDataLoader(ds, batch_size=32, num_workers=2)
loader.load_state_dict(json.load(open(state_path)))
json.dump([i for batch in loader for i in batch["id"].tolist()], open(out_path, "w"))
"""


def test_a_dataset_without_batch_size_resumes_exactly_in_a_new_process(
    tokens_remote: Path, tmp_path: Path
) -> None:
    # The case: the quick-start dataset (no batch_size), StreamingDataLoader(batch_size=32,
    # num_workers=2), stopped after an odd number of batches, resumed in a new process.
    def loader() -> StreamingDataLoader:
        return StreamingDataLoader(
            StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), shuffle=True),
            batch_size=32,
            num_workers=2,
        )

    whole = take_ids(loader())
    first = loader()
    assert first.dataset.batch_size == 32 and first.dataset.predownload == 256  # taken from the loader
    head = take_ids(first, 7)
    state = first.state_dict()
    assert state is not None and state["global_batch_size"] == 32
    (tmp_path / "state.json").write_text(json.dumps(state))
    args = [str(tokens_remote), str(tmp_path), str(tmp_path / "state.json"), str(tmp_path / "out.json")]
    subprocess.run([sys.executable, "-c", RESUME_SCRIPT, *args], check=True, timeout=120)
    tail = json.loads((tmp_path / "out.json").read_text())
    assert sorted(head + tail) == list(range(1000)) and head + tail == whole


def test_another_batch_size_is_refused_naming_both(tokens_remote: Path, tmp_path: Path) -> None:
    ds = _dataset(tokens_remote, tmp_path, batch_size=16)
    with pytest.raises(DatasetConfigError, match=r"batch_size=32\).*batch_size=16"):
        StreamingDataLoader(ds, batch_size=32, num_workers=2)
    with pytest.raises(DatasetConfigError, match=r"batch_size=32\).*batch_size=16"):
        StreamingDataLoader(ds, 32)
    state = StreamingDataLoader(ds, batch_size=16).state_dict()
    assert state is not None and state["global_batch_size"] == 16
    with pytest.raises(StateDictError, match="global batch of 16 .* reads 32 per step .* batch_size=16 on 1"):
        _dataset(tokens_remote, tmp_path, batch_size=32).load_state_dict(state)
    # A state saved with a batch size gives it to a dataset that has none.
    bare = _dataset(tokens_remote, tmp_path, batch_size=None)
    bare.load_state_dict(state)
    assert bare.batch_size == 16 and bare.predownload == 128
    with pytest.raises(DatasetConfigError, match=r"batch_size=32\).*batch_size=16"):
        StreamingDataLoader(bare, batch_size=32)
    # On another number of ranks, the global batch is what must stay.
    two = _dataset(tokens_remote, tmp_path, batch_size=None, world=World(1, 2, 1, 2))
    two.load_state_dict(state)
    assert two.batch_size == 8
    _dataset(tokens_remote, tmp_path, batch_size=8, world=World(1, 2, 1, 2)).load_state_dict(state)
    with pytest.raises(StateDictError, match="3 rank\\(s\\) cannot share equally"):
        _dataset(tokens_remote, tmp_path, batch_size=None, world=World(1, 3, 1, 3)).load_state_dict(state)


def test_a_state_that_a_torch_dataloader_cannot_resume_exactly_is_refused(
    tokens_remote: Path, tmp_path: Path
) -> None:
    ds = _dataset(tokens_remote, tmp_path, batch_size=None)
    loader = DataLoader(ds, batch_size=32, num_workers=2)
    # worker 0's first batch, worker 1's, worker 0's second: not the order's first 96
    head = take_ids(loader, 3)
    with pytest.raises(StateDictError, match=r"StreamingDataset\(batch_size=<the DataLoader's batch_size>\)"):
        ds.state_dict(len(head))
    assert ds.state_dict(0)["sample_in_epoch"] == 0  # the start and the end of the epoch are exact
    assert ds.state_dict(1000)["sample_in_epoch"] == 1000
    # One process reads the order as it is: any stop resumes exactly.
    whole = take_ids(DataLoader(_dataset(tokens_remote, tmp_path, batch_size=None), batch_size=32))
    alone = _dataset(tokens_remote, tmp_path, batch_size=None)
    head = take_ids(DataLoader(alone, batch_size=32), 3)
    resumed = _dataset(tokens_remote, tmp_path, batch_size=None)
    resumed.load_state_dict(alone.state_dict(len(head)))
    assert head + take_ids(DataLoader(resumed, batch_size=32)) == whole


@pytest.mark.parametrize("state", [None, [], "epoch", 3])
def test_load_state_dict_refuses_what_is_not_a_dict(tokens_remote: Path, tmp_path: Path, state) -> None:
    ds = _dataset(tokens_remote, tmp_path)
    with pytest.raises(StateDictError, match=f"not {type(state).__name__}"):
        ds.load_state_dict(state)
    with pytest.raises(StateDictError):
        StreamingDataLoader(ds, batch_size=BATCH).load_state_dict(state)


def test_workers_that_cannot_count_epochs_fail_saying_what_to_do(
    tokens_remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("SHARDFLOW_CACHE_DIR", str(blocker))
    ds = _dataset(tokens_remote, tmp_path / "cache")
    assert len(take_ids(DataLoader(ds, batch_size=BATCH))) == 1000  # in this process: counted in memory
    with pytest.raises(EpochLedgerError, match="SHARDFLOW_CACHE_DIR to a writable folder"):
        take_ids(DataLoader(ds, batch_size=BATCH, num_workers=2))
    # StreamingDataLoader hands fresh workers their epoch in their copy: no file needed.
    assert take_ids(StreamingDataLoader(ds, batch_size=BATCH, num_workers=2)) != []


KILLED_OWNER = """
import os, sys, time
from shardflow.dataset import StreamingDataset
ds = StreamingDataset(remote=sys.argv[1], local=sys.argv[2], shuffle=True)
next(iter(ds))
print(os.getpid(), flush=True)
time.sleep(60)
"""


def test_a_killed_owners_ledger_is_removed_and_never_read(
    tokens_remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARDFLOW_CACHE_DIR", str(tmp_path / "home"))
    folder = epochs_folder()
    owner = subprocess.Popen(
        [sys.executable, "-c", KILLED_OWNER, str(tokens_remote), str(tmp_path / "cache")],
        stdout=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        assert owner.stdout is not None
        pid = int(owner.stdout.readline())
        left = sorted(p.name for p in folder.iterdir())
        assert {name.split(".")[-1] for name in left} == {"owner", "lock", "json"}
        sweep(folder)
        assert sorted(p.name for p in folder.iterdir()) == left, "a live owner's ledger was removed"
    finally:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
    assert all(name.startswith(f"{pid}-") for name in left)
    ds = _dataset(tokens_remote, tmp_path / "cache")  # the first in this process to use the folder: sweeps it
    assert not any(p.name.startswith(f"{pid}-") for p in folder.iterdir())
    del ds


@pytest.mark.parametrize(
    ("samples", "canonical", "nodes", "ranks"),
    [(1000, 1, 1, 1), (1001, 2, 1, 2), (1000, 3, 1, 2), (997, 8, 2, 3), (1000, 2, 4, 1), (1003, 3, 6, 2)],
)
def test_repeats_of_an_epoch_are_the_documented_count(samples: int, canonical: int, nodes: int, ranks: int):
    # The dataset README's bound: the canonical rows padded to equal length (S positions), then each node's
    # share padded to a multiple of its ranks. Every sample is read at least once.
    order = SampleOrder([samples], num_canonical_nodes=canonical, batch_size=4)
    ids = order.epoch_sample_ids(0, WorldShape(nodes, ranks, 2))
    reads = np.bincount(ids[ids >= 0], minlength=samples)
    row = -(-samples // canonical)
    ratio = nodes // canonical if canonical < nodes else 1
    stream = canonical * -(-row // ratio) * ratio
    documented = stream - samples + nodes * (-(stream // nodes) % ranks)
    assert reads.min() == 1 and int(reads.sum()) - samples == documented
    assert documented < max(canonical, nodes) + nodes * ranks
