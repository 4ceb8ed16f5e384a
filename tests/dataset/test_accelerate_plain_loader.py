"""A torch ``DataLoader`` over a StreamingDataset handed to accelerate with several processes is refused
loudly (accelerate would re-shard what the dataset already shards: half the data on 2 ranks), in both of
accelerate's modes; a dataset told it is one process (``World()``) is left to accelerate.

The 2-process test starts this file under torchrun (gloo on CPU); each rank reports what happened as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

accelerate = pytest.importorskip("accelerate")

from accelerate.data_loader import IterableDatasetShard, prepare_data_loader  # noqa: E402

from shardflow.dataset import DatasetConfigError, StreamingDataset, World  # noqa: E402

BATCH = 8


def _outcome(loader: object) -> str | list[int]:
    """``refused: <message>``, or the ids read."""
    try:
        return [i for batch in loader for i in batch["id"].tolist()]  # type: ignore[attr-defined]
    except DatasetConfigError as error:
        return f"refused: {error}"


def _ids_only(samples: list[dict]) -> dict[str, torch.Tensor]:
    return {"id": torch.tensor([sample["id"] for sample in samples])}


def run_rank(remote: str, local: str, out: str) -> None:
    """One rank: a plain DataLoader prepared with and without batch dispatching, then over a one-process
    dataset with dispatching (rank 0 reads everything and hands each rank its part)."""
    accelerator = accelerate.Accelerator(cpu=True)
    ds = StreamingDataset(remote=remote, local=local, shuffle=True, batch_size=BATCH)
    report = {
        "dispatch=True": _outcome(accelerator.prepare(DataLoader(ds, batch_size=BATCH))),  # the default
        "dispatch=False": _outcome(
            prepare_data_loader(DataLoader(ds, batch_size=BATCH), dispatch_batches=False)
        ),
    }
    whole = StreamingDataset(remote=remote, local=f"{local}-whole", batch_size=BATCH, world=World())
    ids_only = DataLoader(whole, batch_size=BATCH, collate_fn=_ids_only)  # accelerate dispatches only tensors
    report["one-process dataset"] = _outcome(accelerator.prepare(ids_only))
    Path(out.format(rank=accelerator.process_index)).write_text(json.dumps(report))


def test_a_wrapper_that_reshards_a_sharded_dataset_is_refused(tokens_remote: Path, tmp_path: Path) -> None:
    """In one process, accelerate's IterableDatasetShard for 2 processes over a dataset of 2 ranks."""
    world = World(rank=0, world_size=2, local_rank=0, local_world_size=2)
    ds = StreamingDataset(
        remote=str(tokens_remote), local=str(tmp_path / "cache"), batch_size=BATCH, world=world
    )
    with pytest.raises(DatasetConfigError, match="IterableDatasetShard for 2 processes.*1/2 of the data"):
        IterableDatasetShard(ds, batch_size=BATCH, num_processes=2, process_index=0).set_epoch(0)
    whole = StreamingDataset(remote=str(tokens_remote), local=str(tmp_path / "whole"), batch_size=BATCH)
    IterableDatasetShard(whole, batch_size=BATCH, num_processes=2, process_index=0).set_epoch(1)
    assert whole.state_dict()["epoch"] == 1
    ds.set_epoch(3)  # anyone else may call it


def test_two_processes_refuse_both_modes(tokens_remote: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "rank{rank}.json")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        __file__, str(tokens_remote), str(tmp_path / "cache"), out,
    ]  # fmt: skip
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    reports = [json.loads(Path(out.format(rank=r)).read_text()) for r in range(2)]
    for report in reports:
        assert "DataLoaderDispatcher for 2 processes" in report["dispatch=True"], report
        assert "IterableDatasetShard for 2 processes" in report["dispatch=False"], report
        assert "StreamingDataLoader" in report["dispatch=False"]
    # rank 0 reads every sample and hands each rank its part of each pair of batches
    whole = [r["one-process dataset"] for r in reports]
    assert set(whole[0]).isdisjoint(whole[1]) and sorted(whole[0] + whole[1]) == list(range(1000))


if __name__ == "__main__":
    run_rank(*sys.argv[1:4])
