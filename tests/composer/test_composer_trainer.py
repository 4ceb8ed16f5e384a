"""examples/composer_trainer.py under Composer's own launcher (2 CPU processes, gloo), with the loader's
batch reads on: stopped at batch 40 in epoch 1 and resumed from Composer's checkpoint there, and resumed from
the checkpoint Composer wrote at epoch 0's end (epoch 1 then reads the order it reads without a stop).

Composer 0.32 needs torch < 2.7.1, so these tests run in a hatch environment of their own:
``hatch run composer:test``; elsewhere they are skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "composer", reason="MosaicML Composer is not installed here: run `hatch run composer:test` (torch 2.7)"
)

import torch  # noqa: E402
from composer import Trainer  # noqa: E402
from composer.models import ComposerClassifier  # noqa: E402

from shardflow.dataset.composer import EpochEndResume  # noqa: E402

from ..examples._recipes import EXAMPLES, check_stop_and_resume, records  # noqa: E402


def run_composer(args: list[str], tmp: Path) -> None:
    """``composer -n 2 examples/composer_trainer.py ARGS`` with temporary and cache folders in ``tmp``; fail
    with every rank's output when it exits non-zero."""
    launched = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launched}
    (tmp / "tmp").mkdir(exist_ok=True)
    env.update(TMPDIR=str(tmp / "tmp"), SHARDFLOW_CACHE_DIR=str(tmp / "shardflow-cache"))
    launcher = [sys.executable, "-m", "composer.cli.launcher", "-n", "2", "--stderr", f"{tmp}/r{{rank}}.err"]
    done = subprocess.run(
        [*launcher, str(EXAMPLES / "composer_trainer.py"), *args],
        env=env, cwd=EXAMPLES.parent, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    rank1 = tmp / "r1.err"
    assert done.returncode == 0, (
        f"composer_trainer.py failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}\n"
        f"rank 1:\n{rank1.read_text()[-3000:] if rank1.exists() else '(no output)'}"
    )


def test_two_ranks_disjoint_new_order_and_exact_resume(tmp_path: Path) -> None:
    common = ["--remote", str(tmp_path / "remote"), "--cache", str(tmp_path / "cache")]
    common += ["--checkpoints", str(tmp_path / "ckpt")]
    run_composer([*common, "--stop-at-batch", "40", "--record", str(tmp_path / "a{rank}")], tmp_path)
    # Composer's checkpoint names: ep<epoch>-ba<batch>; epoch 0 ends at batch 32 (512 samples, 2 x 8 a batch)
    stopped, epoch_end = tmp_path / "ckpt" / "ep1-ba40-rank0.pt", tmp_path / "ckpt" / "ep1-ba32-rank0.pt"
    assert stopped.is_file() and epoch_end.is_file()
    run_composer([*common, "--resume", str(stopped), "--record", str(tmp_path / "b{rank}")], tmp_path)
    epoch1 = check_stop_and_resume(records(tmp_path / "a{rank}"), records(tmp_path / "b{rank}"))

    run_composer([*common, "--resume", str(epoch_end), "--record", str(tmp_path / "c{rank}")], tmp_path)
    assert [r["ids"] for r in records(tmp_path / "c{rank}")] == epoch1, (
        "resumed at epoch 0's end, epoch 1 did not read the order it reads without a stop"
    )


def test_epoch_end_resume_refuses_a_loader_over_another_dataset() -> None:
    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,)))
    model = ComposerClassifier(torch.nn.Linear(4, 2), num_classes=2)
    trainer = Trainer(
        model=model,
        train_dataloader=torch.utils.data.DataLoader(data, batch_size=4),
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        max_duration="1ep",
        device="cpu",
        callbacks=[EpochEndResume()],
        progress_bar=False,
    )
    with pytest.raises(TypeError, match="StreamingDataset"):
        trainer.fit()
