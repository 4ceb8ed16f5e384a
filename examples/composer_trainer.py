"""MosaicML Composer over a StreamingDataset: no glue, Composer's checkpoints carry the dataset's position.

    composer -n 2 examples/composer_trainer.py                              # Composer's launcher, CPU
    composer -n 2 examples/composer_trainer.py --stop-at 40ba               # checkpoint at batch 40, stop
    composer -n 2 examples/composer_trainer.py --resume <ckpt>/ep1-ba40-rank0.pt

Composer saves its training dataset's ``state_dict`` in each checkpoint and gives it back to
``load_state_dict`` on ``load_path``, as it does for mosaicml-streaming; the dataset shards itself by rank,
so pass the loader as it is. Give ``device_train_microbatch_size`` (Composer cannot guess it
from a loader over an iterable dataset).

Not run by the tests: Composer 0.32 needs torch < 2.7.1, and the only such torch on PyPI for Linux x86_64
is a CUDA build pulling about 3 GB of nvidia-* wheels (the CPU builds are on download.pytorch.org only);
see the dataset README, "Training frameworks". Without ``--remote`` the example writes a tiny dataset first.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch
from composer import Trainer
from composer.models import ComposerModel
from tiny_data import CLASSES, FEATURES, default_folder, ensure_dataset

from shardflow.dataset import StreamingDataLoader, StreamingDataset


class Classifier(ComposerModel):
    """A linear classifier over the batches' ``x`` and ``y`` columns."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(FEATURES, CLASSES)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(batch["x"])

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor], *_: Any, **__: Any) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(outputs, batch["y"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--remote", type=Path, default=default_folder("classes"), help="the dataset")
    parser.add_argument("--cache", default=None, help="cache folder (default: shardflow's own)")
    parser.add_argument("--samples", type=int, default=512, help="samples to write when --remote is empty")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8, help="per rank")
    parser.add_argument("--checkpoints", default=str(default_folder("composer-ckpt")))
    parser.add_argument("--stop-at", default=None, help="a duration such as 40ba: checkpoint there and stop")
    parser.add_argument("--resume", default=None, help="a checkpoint to continue from")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    remote = ensure_dataset(args.remote, args.samples)
    dataset = StreamingDataset(remote=str(remote), local=args.cache, shuffle=True, shuffle_seed=7)
    loader = StreamingDataLoader(dataset, batch_size=args.batch_size, num_workers=1)
    model = Classifier()
    trainer = Trainer(
        model=model,
        train_dataloader=loader,
        max_duration=f"{args.epochs}ep",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        device="cpu",
        device_train_microbatch_size=args.batch_size,
        save_folder=args.checkpoints,
        save_interval=args.stop_at or "1ep",
        load_path=args.resume,
        progress_bar=False,
    )
    trainer.fit(duration=args.stop_at)  # None: up to max_duration


if __name__ == "__main__":
    main()
