"""examples/torchrun_ddp.py: 2 ranks (gloo) x 2 workers, stopped mid-epoch with a checkpoint and resumed."""

from __future__ import annotations

from pathlib import Path

from ._recipes import check_stop_and_resume, recipe_folders, stop_and_resume


def test_two_ranks_disjoint_new_order_and_exact_resume(tmp_path: Path) -> None:
    folders = recipe_folders(tmp_path, "--checkpoints")
    done, first, resumed = stop_and_resume("torchrun_ddp.py", folders, "step40.pt", tmp_path, processes=2)
    assert "trained to step 64 on 2 process(es)" in done.stdout
    check_stop_and_resume(first, resumed)
