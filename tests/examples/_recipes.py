"""Running the scripts of examples/ as a user would, and checking what the framework recipes' ranks read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SAMPLES = 512  # the recipes' tiny dataset; 2 ranks x batches of 8: 32 steps an epoch


def run_example(
    script: str, args: Sequence[str], tmp: Path, processes: int | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<script>`` (under torchrun with ``processes``) with temporary and cache folders in
    ``tmp``; fail with its output when it exits non-zero."""
    launcher = [sys.executable]
    if processes is not None:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    (tmp / "tmp").mkdir(exist_ok=True)
    env.update(TMPDIR=str(tmp / "tmp"), SHARDFLOW_CACHE_DIR=str(tmp / "shardflow-cache"))
    done = subprocess.run(
        [*launcher, str(EXAMPLES / script), *args],
        env=env, cwd=EXAMPLES.parent, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done


def records(pattern: Path, ranks: int = 2) -> list[dict]:
    """The records the ranks of one run wrote (``--record``)."""
    return [json.loads(Path(str(pattern).format(rank=r)).read_text()) for r in range(ranks)]


def recipe_folders(tmp: Path, checkpoints: str) -> list[str]:
    """A framework recipe's ``--remote``, ``--cache`` and checkpoint folder (option ``checkpoints``), in
    ``tmp``."""
    return ["--remote", str(tmp / "remote"), "--cache", str(tmp / "cache"), checkpoints, str(tmp / "ckpt")]


def run_recorded(
    script: str, args: Sequence[str], tmp: Path, name: str, processes: int | None = None
) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    """``run_example`` with ``--record <tmp>/<name>{rank}``: the run and what its 2 ranks read."""
    pattern = tmp / f"{name}{{rank}}"
    done = run_example(script, [*args, "--record", str(pattern)], tmp, processes)
    return done, records(pattern)


def stop_and_resume(
    script: str, args: Sequence[str], checkpoint: str, tmp: Path, processes: int | None = None
) -> tuple[subprocess.CompletedProcess[str], list[dict], list[dict]]:
    """Run a recipe stopped at step 40 (records ``a``), then again resumed from ``<tmp>/ckpt/<checkpoint>``
    (records ``b``); returns the resumed run and both runs' records."""
    _, first = run_recorded(script, [*args, "--stop-at-step", "40"], tmp, "a", processes)
    resume = ["--resume", str(tmp / "ckpt" / checkpoint)]
    done, resumed = run_recorded(script, [*args, *resume], tmp, "b", processes)
    return done, first, resumed


def check_stop_and_resume(first: list[dict], resumed: list[dict]) -> list[list[int]]:
    """``first``: 2 ranks that trained epoch 0 and stopped in epoch 1 at a checkpoint; ``resumed``: the run
    continued from it. Each epoch's rank shares are disjoint and cover every sample once, epoch 1's order
    differs from epoch 0's, and the two parts of epoch 1 read each sample once. Returns epoch 1 per rank."""
    share = first[0]["samples_per_epoch"]
    assert share * len(first) == SAMPLES
    epoch0 = [r["ids"][:share] for r in first]
    epoch1 = [r["ids"][share:] + s["ids"] for r, s in zip(first, resumed, strict=True)]
    for name, epoch in (("epoch 0", epoch0), ("epoch 1 across the stop", epoch1)):
        assert not set(epoch[0]) & set(epoch[1]), f"{name}: the ranks shared samples"
        everything = sorted(i for rank in epoch for i in rank)
        assert everything == list(range(SAMPLES)), f"{name}: samples missed or read twice"
    assert 0 < len(first[0]["ids"]) - share < share, "the first run did not stop inside epoch 1"
    assert epoch1[0] != epoch0[0], "epoch 1 repeated epoch 0's order"
    return epoch1
