"""examples/hf_trainer.py: StreamingTrainer on 2 ranks (torchrun, gloo), stopped at checkpoint-40 in epoch 1
and resumed from it with ``train(resume_from_checkpoint=...)``."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")

from ._recipes import check_stop_and_resume, recipe_folders, stop_and_resume  # noqa: E402


def test_two_ranks_disjoint_new_order_and_exact_resume(tmp_path: Path) -> None:
    folders = recipe_folders(tmp_path, "--output")
    done, first, resumed = stop_and_resume("hf_trainer.py", folders, "checkpoint-40", tmp_path, processes=2)
    assert "trained to step 64 on 2 process(es)" in done.stdout
    check_stop_and_resume(first, resumed)
