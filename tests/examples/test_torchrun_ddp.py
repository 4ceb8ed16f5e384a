"""examples/torchrun_ddp.py: 2 ranks (gloo) x 2 workers, stopped mid-epoch with a checkpoint and resumed."""

from __future__ import annotations

from pathlib import Path

from ._recipes import check_stop_and_resume, records, run_example


def test_two_ranks_disjoint_new_order_and_exact_resume(tmp_path: Path) -> None:
    common = [
        "--remote",
        str(tmp_path / "remote"),
        "--cache",
        str(tmp_path / "cache"),
        "--checkpoints",
        str(tmp_path / "ckpt"),
    ]
    run_example(
        "torchrun_ddp.py",
        [*common, "--stop-at-step", "40", "--record", str(tmp_path / "a{rank}")],
        tmp_path,
        processes=2,
    )
    done = run_example(
        "torchrun_ddp.py",
        [*common, "--resume", str(tmp_path / "ckpt" / "step40.pt"), "--record", str(tmp_path / "b{rank}")],
        tmp_path,
        processes=2,
    )
    assert "trained to step 64 on 2 process(es)" in done.stdout
    check_stop_and_resume(records(tmp_path / "a{rank}"), records(tmp_path / "b{rank}"))
