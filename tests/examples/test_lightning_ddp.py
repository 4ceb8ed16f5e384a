"""examples/lightning_ddp.py: StreamingDataModule under Lightning's own DDP launcher (2 CPU processes, gloo):
stopped at step 40 in epoch 1 and resumed from that checkpoint, and resumed from the checkpoint written at
epoch 0's end (where Lightning itself restores no loader state): epoch 1 is then the same new order."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("lightning")

from ._recipes import check_stop_and_resume, records, run_example  # noqa: E402


def test_two_ranks_disjoint_new_order_and_exact_resume(tmp_path: Path) -> None:
    common = [
        "--devices",
        "2",
        "--remote",
        str(tmp_path / "remote"),
        "--cache",
        str(tmp_path / "cache"),
        "--checkpoints",
        str(tmp_path / "ckpt"),
    ]
    run_example(
        "lightning_ddp.py", [*common, "--stop-at-step", "40", "--record", str(tmp_path / "a{rank}")], tmp_path
    )
    assert (tmp_path / "ckpt" / "epoch0.ckpt").is_file()
    run_example(
        "lightning_ddp.py",
        [*common, "--resume", str(tmp_path / "ckpt" / "step40.ckpt"), "--record", str(tmp_path / "b{rank}")],
        tmp_path,
    )
    epoch1 = check_stop_and_resume(records(tmp_path / "a{rank}"), records(tmp_path / "b{rank}"))

    run_example(
        "lightning_ddp.py",
        [*common, "--resume", str(tmp_path / "ckpt" / "epoch0.ckpt"), "--record", str(tmp_path / "c{rank}")],
        tmp_path,
    )
    assert [r["ids"] for r in records(tmp_path / "c{rank}")] == epoch1, (
        "resumed at epoch 0's end, epoch 1 did not read the order it reads without a stop"
    )
