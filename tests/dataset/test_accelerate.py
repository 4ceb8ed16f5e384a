"""Hugging Face accelerate: ``Accelerator.prepare`` keeps StreamingDataLoader as it is (no re-sharding, no
batch dispatching), and ``save_state`` / ``load_state`` carry its position.

The 2-process test starts this file under torchrun (gloo on CPU); each rank trains a tiny model for an epoch,
stops the next one midway with ``save_state``, and resumes it with a new Accelerator, dataset and loader
through ``load_state``, reporting the ids it read as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

accelerate = pytest.importorskip("accelerate")

from shardflow.dataset import StreamingDataLoader, StreamingDataset  # noqa: E402

BATCH = 8
STOP_AFTER = 5  # batches of the second epoch before save_state


@pytest.fixture(autouse=True)
def _fresh_accelerate_state() -> object:
    """accelerate keeps its state per process: leave none behind for other tests."""
    yield
    accelerate.state.AcceleratorState._reset_state(reset_partial_state=True)


def _ids(batches: list[dict]) -> list[int]:
    return [i for batch in batches for i in batch["id"].tolist()]


def _prepared(remote: str, local: str, workers: int) -> tuple[object, StreamingDataLoader, torch.nn.Module]:
    """A new Accelerator, and the loader and a tiny model it prepared."""
    accelerator = accelerate.Accelerator(cpu=True)
    ds = StreamingDataset(remote=remote, local=local, shuffle=True, batch_size=BATCH, shuffle_seed=3)
    loader = StreamingDataLoader(ds, batch_size=BATCH, drop_last=False, num_workers=workers)
    model = torch.nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model, optimizer, prepared = accelerator.prepare(model, optimizer, loader)
    assert prepared is loader, f"accelerate wrapped the loader into {type(prepared).__name__}"
    return accelerator, prepared, model


def _train(model: torch.nn.Module, batch: dict) -> None:
    model(batch["tokens"].float()).sum().backward()


def run_rank(remote: str, local: str, ckpt: str, out: str, workers: int) -> None:
    """One rank: epoch 0 whole, epoch 1 to STOP_AFTER then save_state, then resume it from load_state."""
    accelerator, loader, model = _prepared(remote, local, workers)
    first = list(loader)
    second: list[dict] = []
    for batch in loader:
        _train(model, batch)
        second.append(batch)
        if len(second) == STOP_AFTER:
            break
    accelerator.save_state(ckpt)
    accelerator.wait_for_everyone()
    accelerator, loader, model = _prepared(remote, local, workers)
    accelerator.load_state(ckpt)
    rest = list(loader)
    report = {
        "world": accelerator.num_processes,
        "len": len(loader),
        "epoch0": _ids(first),
        "before": _ids(second),
        "after": _ids(rest),
    }
    Path(out.format(rank=accelerator.process_index)).write_text(json.dumps(report))


def test_prepare_keeps_the_loader_and_resumes_in_one_process(tokens_remote: Path, tmp_path: Path) -> None:
    run_rank(
        str(tokens_remote), str(tmp_path / "cache"), str(tmp_path / "ckpt"), str(tmp_path / "r{rank}"), 0
    )
    report = json.loads((tmp_path / "r0").read_text())
    assert report["world"] == 1
    assert sorted(report["epoch0"]) == list(range(1000))
    assert sorted(report["before"] + report["after"]) == list(range(1000))
    assert report["before"] + report["after"] != report["epoch0"], (
        "the second epoch repeated the first's order"
    )


def test_prepare_with_two_processes_reads_every_sample_once(tokens_remote: Path, tmp_path: Path) -> None:
    """torchrun, 2 ranks on gloo, 1 worker each: disjoint shares, a new order in epoch 1, exact resume."""
    out = str(tmp_path / "rank{rank}.json")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        __file__, str(tokens_remote), str(tmp_path / "cache"), str(tmp_path / "ckpt"), out, "1",
    ]  # fmt: skip
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    reports = [json.loads(Path(out.format(rank=r)).read_text()) for r in range(2)]
    assert [r["world"] for r in reports] == [2, 2]
    for key in ("epoch0", "before"):
        assert not set(reports[0][key]) & set(reports[1][key]), f"ranks shared samples in {key}"
    epoch0 = Counter(reports[0]["epoch0"] + reports[1]["epoch0"])
    assert sorted(epoch0) == list(range(1000)) and set(epoch0.values()) == {1}
    resumed = [i for r in reports for i in r["before"] + r["after"]]
    assert sorted(resumed) == list(range(1000)), "the resumed epoch lost or repeated samples"
    assert reports[0]["before"] != reports[0]["epoch0"][: len(reports[0]["before"])]
    assert all(r["len"] == -(-500 // BATCH) for r in reports)


if __name__ == "__main__":
    run_rank(*sys.argv[1:5], int(sys.argv[5]))
