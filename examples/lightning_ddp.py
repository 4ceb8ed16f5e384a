"""PyTorch Lightning with DDP over a StreamingDataset: each rank reads its own share, a new order each epoch,
and ``trainer.fit(ckpt_path=...)`` continues at the next sample (mid-epoch or at an epoch's end).

    python examples/lightning_ddp.py --devices 2                      # CPU, gloo, Lightning starts rank 1
    python examples/lightning_ddp.py --devices 2 --stop-at-step 40    # checkpoint at step 40 and stop
    python examples/lightning_ddp.py --devices 2 --resume <ckpt>/step40.ckpt

The glue is ``shardflow.dataset.lightning.StreamingDataModule``
(``pip install 'shardflow-dataset[lightning]'``): its loader is a StreamingDataLoader, whose position goes
into every checkpoint. Without ``--remote`` the example writes a tiny dataset of its own first.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import torch
from tiny_data import CLASSES, FEATURES, default_folder, ensure_dataset, recipe_parser, write_record

from shardflow.dataset import StreamingDataset
from shardflow.dataset.lightning import StreamingDataModule


class Classifier(pl.LightningModule):
    """A linear classifier that also remembers the sample ids it trained on."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(FEATURES, CLASSES)
        self.seen: list[int] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.seen.extend(batch["id"].tolist())
        loss = torch.nn.functional.cross_entropy(self.net(batch["x"]), batch["y"])
        self.log("loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Checkpoints(pl.Callback):
    """Saves ``epoch<e>.ckpt`` at each epoch's end and ``step<n>.ckpt`` at step ``stop_at``, then stops."""

    def __init__(self, folder: Path, stop_at: int | None) -> None:
        self.folder, self.stop_at = folder, stop_at

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.should_stop:  # a whole epoch, not one cut short at stop_at
            trainer.save_checkpoint(self.folder / f"epoch{trainer.current_epoch}.ckpt")

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: object) -> None:
        if trainer.global_step == self.stop_at:
            trainer.save_checkpoint(self.folder / f"step{self.stop_at}.ckpt")
            trainer.should_stop = True


def main() -> None:
    parser = recipe_parser(__doc__)
    parser.add_argument("--devices", type=int, default=2, help="processes (CPU, gloo)")
    parser.add_argument("--checkpoints", type=Path, default=default_folder("lightning-ckpt"))
    parser.add_argument("--stop-at-step", type=int, default=None, help="checkpoint there and stop")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    remote = ensure_dataset(args.remote, args.samples)
    data = StreamingDataModule(
        # Built in setup(), in each process Lightning starts.
        train=lambda: StreamingDataset(remote=str(remote), local=args.cache, shuffle=True, shuffle_seed=7),
        batch_size=args.batch_size,
        num_workers=args.workers,
    )
    model = Classifier()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        max_epochs=args.epochs,
        callbacks=[Checkpoints(args.checkpoints, args.stop_at_step)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data, ckpt_path=args.resume)
    assert data.train_dataset is not None
    write_record(args.record, trainer.global_rank, model.seen, len(data.train_dataset))
    if trainer.is_global_zero:
        print(
            f"trained {trainer.global_step} steps on {args.devices} process(es); last loss "
            f"{float(trainer.callback_metrics.get('loss', float('nan'))):.3f}"
        )


if __name__ == "__main__":
    main()
