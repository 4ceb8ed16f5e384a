"""Resumption: a state always takes effect, in fresh processes, on other worker counts, from the reference."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from shardflow.dataset import StateDictError, StreamingDataLoader, StreamingDataset

BATCH = 10


def _loader(remote: Path, local: Path, workers: int, **kwargs) -> StreamingDataLoader:
    ds = StreamingDataset(remote=str(remote), local=str(local), shuffle=True, batch_size=BATCH, **kwargs)
    return StreamingDataLoader(ds, batch_size=BATCH, num_workers=workers)


def take_ids(loader: Iterable[Any], batches: int | None = None) -> list[int]:
    """The ids of the loader's batches, stopping after ``batches`` batches when given."""
    ids: list[int] = []
    for k, batch in enumerate(loader):
        ids.extend(batch["id"].tolist())
        if batches is not None and k + 1 == batches:
            break
    return ids


@pytest.mark.parametrize(
    ("stop", "workers"), [(1, (0, 0)), (7, (2, 2)), (25, (2, 1)), (60, (1, 4)), (99, (0, 2))]
)
def test_resume_mid_epoch_in_a_new_object(
    tokens_remote: Path, tmp_path: Path, stop: int, workers: tuple[int, int]
) -> None:
    before, after = workers
    whole = take_ids(_loader(tokens_remote, tmp_path, before), None)
    first = _loader(tokens_remote, tmp_path, before)
    head = take_ids(first, stop)
    state = first.state_dict()
    assert state is not None and state["epoch"] == 0 and state["sample_in_epoch"] == stop * BATCH
    second = _loader(tokens_remote, tmp_path, after)
    second.load_state_dict(json.loads(json.dumps(state)))
    tail = take_ids(second, None)
    assert head + tail == whole


def test_next_epochs_follow_the_resumed_one(tokens_remote: Path, tmp_path: Path) -> None:
    reference = _loader(tokens_remote, tmp_path, 2)
    epochs = [take_ids(reference, None) for _ in range(3)]
    first = _loader(tokens_remote, tmp_path, 2)
    take_ids(first, None)
    head = take_ids(first, 30)
    resumed = _loader(tokens_remote, tmp_path, 0)
    resumed.load_state_dict(first.state_dict())  # type: ignore[arg-type]
    assert head + take_ids(resumed, None) == epochs[1]
    assert take_ids(resumed, None) == epochs[2]


def test_load_state_dict_takes_effect_on_an_iterated_dataset(tokens_remote: Path, tmp_path: Path) -> None:
    ds = StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), shuffle=True, batch_size=BATCH)
    whole = [s["id"] for s in ds]
    [s["id"] for s in ds]  # epoch 1 done: the reference would ignore a state for epoch 0 now
    ds.load_state_dict(
        {
            "epoch": 0,
            "sample_in_epoch": 400,
            "num_canonical_nodes": 1,
            "shuffle_seed": 9176,
            "initial_physical_nodes": 1,
        }
    )
    assert [s["id"] for s in ds] == whole[400:]
    assert ds.state_dict(0, False)["epoch"] == 0


def test_persistent_workers_pick_up_a_loaded_state(tokens_remote: Path, tmp_path: Path) -> None:
    ds = StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), shuffle=True, batch_size=BATCH)
    loader = StreamingDataLoader(ds, batch_size=BATCH, num_workers=2, persistent_workers=True)
    whole = take_ids(loader, None)
    loader.load_state_dict(
        {
            "epoch": 0,
            "sample_in_epoch": 200,
            "num_canonical_nodes": 1,
            "shuffle_seed": 9176,
            "initial_physical_nodes": 1,
        }
    )
    assert take_ids(loader, None) == whole[200:]


def test_state_saved_at_the_end_of_an_epoch_starts_the_next(tokens_remote: Path, tmp_path: Path) -> None:
    loader = _loader(tokens_remote, tmp_path, 2)
    take_ids(loader, None)
    second = take_ids(loader, None)
    done = _loader(tokens_remote, tmp_path, 2)
    take_ids(done, None)
    state = done.state_dict()
    assert state == {**state, "epoch": 0, "sample_in_epoch": 1000}
    resumed = _loader(tokens_remote, tmp_path, 0)
    resumed.load_state_dict(state)  # type: ignore[arg-type]
    assert take_ids(resumed, None) == second


RESUME_SCRIPT = """
import json, sys
from shardflow.dataset import StreamingDataLoader, StreamingDataset
remote, local, state_path, out_path, workers = sys.argv[1:6]
ds = StreamingDataset(remote=remote, local=local, shuffle=True, batch_size=10)
loader = StreamingDataLoader(ds, batch_size=10, num_workers=int(workers))
loader.load_state_dict(json.load(open(state_path)))
ids = [i for batch in loader for i in batch["id"].tolist()]
json.dump(ids, open(out_path, "w"))
"""


def test_resume_in_a_fresh_process(tokens_remote: Path, tmp_path: Path) -> None:
    whole = take_ids(_loader(tokens_remote, tmp_path, 2), None)
    first = _loader(tokens_remote, tmp_path, 2)
    head = take_ids(first, 33)
    (tmp_path / "state.json").write_text(json.dumps(first.state_dict()))
    args = [str(tokens_remote), str(tmp_path), str(tmp_path / "state.json"), str(tmp_path / "out.json"), "1"]
    subprocess.run([sys.executable, "-c", RESUME_SCRIPT, *args], check=True, timeout=120)
    assert head + json.loads((tmp_path / "out.json").read_text()) == whole


REFERENCE_SCRIPT = """
import json, sys
from streaming import StreamingDataLoader, StreamingDataset
remote, local, out_path = sys.argv[1:4]
ds = StreamingDataset(remote=remote, local=local, shuffle=False, batch_size=10)
loader = StreamingDataLoader(ds, batch_size=10, num_workers=0)
ids = []
for k, batch in enumerate(loader):
    ids.extend(batch["id"].tolist())
    if k == 36:
        break
json.dump({"state": loader.state_dict(), "ids": ids}, open(out_path, "w"))
"""


def test_a_state_dict_of_the_reference_resumes_here(
    tokens_remote: Path, tmp_path: Path, reference_python: Path
) -> None:
    out = tmp_path / "reference.json"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run(
        [
            str(reference_python),
            "-c",
            REFERENCE_SCRIPT,
            str(tokens_remote),
            str(tmp_path / "ref-cache"),
            str(out),
        ],
        check=True,
        timeout=300,
        env=env,
        capture_output=True,
    )
    saved = json.loads(out.read_text())
    state = saved["state"]
    assert set(state) == {
        "epoch",
        "sample_in_epoch",
        "num_canonical_nodes",
        "shuffle_seed",
        "initial_physical_nodes",
    }
    assert state["epoch"] == 0 and state["sample_in_epoch"] == 370 and saved["ids"] == list(range(370))
    ds = StreamingDataset(
        remote=str(tokens_remote), local=str(tmp_path / "ours"), shuffle=False, batch_size=10
    )
    loader = StreamingDataLoader(ds, batch_size=10)
    loader.load_state_dict(state)
    assert take_ids(loader, None) == list(range(370, 1000))
    assert loader.state_dict() == {**state, "sample_in_epoch": 1000, "global_batch_size": 10}


OURS_IN_REFERENCE_SCRIPT = """
import json, sys
from streaming import StreamingDataLoader, StreamingDataset
remote, local, state_path, out_path = sys.argv[1:5]
ds = StreamingDataset(remote=remote, local=local, shuffle=False, batch_size=10)
loader = StreamingDataLoader(ds, batch_size=10, num_workers=0)
loader.load_state_dict(json.load(open(state_path)))
json.dump([i for batch in loader for i in batch["id"].tolist()], open(out_path, "w"))
"""


def test_a_state_dict_of_ours_resumes_in_the_reference(
    tokens_remote: Path, tmp_path: Path, reference_python: Path
) -> None:
    ds = StreamingDataset(remote=str(tokens_remote), local=str(tmp_path / "ours"), shuffle=False)
    loader = StreamingDataLoader(ds, batch_size=10, num_workers=2)
    assert take_ids(loader, 37) == list(range(370))
    state = loader.state_dict()
    assert state is not None and state["global_batch_size"] == 10  # an extra key, which the reference ignores
    (tmp_path / "state.json").write_text(json.dumps(state))
    args = [
        str(tokens_remote),
        str(tmp_path / "ref-cache"),
        str(tmp_path / "state.json"),
        str(tmp_path / "out"),
    ]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run(
        [str(reference_python), "-c", OURS_IN_REFERENCE_SCRIPT, *args],
        check=True,
        timeout=300,
        env=env,
        capture_output=True,
    )
    assert json.loads((tmp_path / "out").read_text()) == list(range(370, 1000))


@pytest.mark.parametrize(
    "broken",
    [
        {"epoch": 0},
        {
            "epoch": -1,
            "sample_in_epoch": 0,
            "num_canonical_nodes": 1,
            "shuffle_seed": 1,
            "initial_physical_nodes": 1,
        },
        {
            "epoch": 0,
            "sample_in_epoch": "10",
            "num_canonical_nodes": 1,
            "shuffle_seed": 1,
            "initial_physical_nodes": 1,
        },
        {
            "epoch": 0,
            "sample_in_epoch": 0,
            "num_canonical_nodes": 0,
            "shuffle_seed": 1,
            "initial_physical_nodes": 1,
        },
    ],
)
def test_a_broken_state_dict_is_refused_by_name(tokens_remote: Path, tmp_path: Path, broken: dict) -> None:
    ds = StreamingDataset(remote=str(tokens_remote), local=str(tmp_path))
    with pytest.raises(StateDictError, match="sample_in_epoch|epoch|num_canonical_nodes"):
        ds.load_state_dict(broken)
