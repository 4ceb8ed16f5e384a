"""examples/hf_trainer.py: StreamingTrainer on 2 ranks (torchrun, gloo), stopped at checkpoint-40 in epoch 1
and resumed from it with ``train(resume_from_checkpoint=...)``."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")

from ._recipes import check_stop_and_resume, records, run_example  # noqa: E402


def test_two_ranks_disjoint_new_order_and_exact_resume(tmp_path: Path) -> None:
    common = [
        "--remote",
        str(tmp_path / "remote"),
        "--cache",
        str(tmp_path / "cache"),
        "--output",
        str(tmp_path / "out"),
    ]
    run_example(
        "hf_trainer.py",
        [*common, "--stop-at-step", "40", "--record", str(tmp_path / "a{rank}")],
        tmp_path,
        processes=2,
    )
    done = run_example(
        "hf_trainer.py",
        [*common, "--resume", str(tmp_path / "out" / "checkpoint-40"), "--record", str(tmp_path / "b{rank}")],
        tmp_path,
        processes=2,
    )
    assert "trained to step 64 on 2 process(es)" in done.stdout
    check_stop_and_resume(records(tmp_path / "a{rank}"), records(tmp_path / "b{rank}"))
