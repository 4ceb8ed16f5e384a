"""MosaicML Composer over a StreamingDataset: each rank reads its own share, a new order each epoch, and a
run resumed from one of Composer's checkpoints continues at the next sample.

    composer -n 2 examples/composer_trainer.py                        # Composer's launcher, CPU, gloo
    composer -n 2 examples/composer_trainer.py --stop-at-batch 40     # checkpoint at batch 40 and stop
    composer -n 2 examples/composer_trainer.py --resume <ckpt>/ep1-ba40-rank0.pt

Pass the ``StreamingDataLoader`` as it is (the dataset shards itself by rank; the loader reports its
``batch_size``, which Composer takes as ``device_train_microbatch_size``). Composer saves the training
dataset's ``state_dict`` in each checkpoint and gives it back to ``load_state_dict`` on ``load_path``, as it
does for mosaicml-streaming; the callback ``shardflow.dataset.composer.EpochEndResume`` makes a checkpoint
written at an epoch's end resume into the next epoch's order (without it, the finished epoch's order again).
Composer 0.32 needs torch < 2.7.1: ``hatch run composer:test`` runs this example in an environment of its
own. Without ``--remote`` the example writes a tiny dataset first.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from composer import Event, Trainer
from composer.models import ComposerModel
from composer.utils import dist
from tiny_data import CLASSES, FEATURES, default_folder, ensure_dataset, recipe_parser, write_record

from shardflow.dataset import StreamingDataLoader, StreamingDataset
from shardflow.dataset.composer import EpochEndResume


class Classifier(ComposerModel):
    """A linear classifier over the batches' ``x`` and ``y`` columns that remembers the ids it trained on."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(FEATURES, CLASSES)
        self.seen: list[int] = []

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.training:
            self.seen.extend(batch["id"].tolist())
        return self.net(batch["x"])

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor], *_: Any, **__: Any) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(outputs, batch["y"])


def main() -> None:
    parser = recipe_parser(__doc__)
    parser.add_argument("--checkpoints", default=str(default_folder("composer-ckpt")))
    parser.add_argument("--stop-at-batch", type=int, default=None, help="checkpoint there and stop")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    remote = ensure_dataset(args.remote, args.samples)
    dataset = StreamingDataset(remote=str(remote), local=args.cache, shuffle=True, shuffle_seed=7)
    loader = StreamingDataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    model = Classifier()
    trainer = Trainer(
        model=model,
        train_dataloader=loader,
        max_duration=f"{args.epochs}ep",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        device="cpu",
        callbacks=[EpochEndResume()],
        save_folder=args.checkpoints,
        save_interval=lambda state, event: (  # at each epoch's end, and at --stop-at-batch
            event == Event.EPOCH_CHECKPOINT
            or (event == Event.BATCH_CHECKPOINT and int(state.timestamp.batch) == args.stop_at_batch)
        ),
        save_overwrite=True,
        load_path=args.resume,
        progress_bar=False,
        log_to_console=False,
    )
    trainer.fit(duration=None if args.stop_at_batch is None else f"{args.stop_at_batch}ba")
    write_record(args.record, dist.get_global_rank(), model.seen, len(dataset))
    if dist.get_global_rank() == 0:
        print(f"trained to batch {int(trainer.state.timestamp.batch)} on {dist.get_world_size()} process(es)")


if __name__ == "__main__":
    main()
