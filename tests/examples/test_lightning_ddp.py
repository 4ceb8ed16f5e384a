"""examples/lightning_ddp.py: StreamingDataModule under Lightning's own DDP launcher (2 CPU processes, gloo):
stopped at step 40 in epoch 1 and resumed from that checkpoint, and resumed from the checkpoint written at
epoch 0's end (where Lightning itself restores no loader state): epoch 1 is then the same new order."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("lightning")

from ._recipes import check_stop_and_resume, recipe_folders, run_recorded, stop_and_resume  # noqa: E402


def test_two_ranks_disjoint_new_order_and_exact_resume(tmp_path: Path) -> None:
    args = ["--devices", "2", *recipe_folders(tmp_path, "--checkpoints")]
    _, first, resumed = stop_and_resume("lightning_ddp.py", args, "step40.ckpt", tmp_path)
    assert (tmp_path / "ckpt" / "epoch0.ckpt").is_file()
    epoch1 = check_stop_and_resume(first, resumed)

    resume = ["--resume", str(tmp_path / "ckpt" / "epoch0.ckpt")]
    _, from_epoch_end = run_recorded("lightning_ddp.py", [*args, *resume], tmp_path, "c")
    assert [r["ids"] for r in from_epoch_end] == epoch1, (
        "resumed at epoch 0's end, epoch 1 did not read the order it reads without a stop"
    )
