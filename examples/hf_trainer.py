"""Hugging Face ``transformers.Trainer`` over a StreamingDataset, in 1 or more processes: each rank reads its
own share, a new order each epoch, and ``train(resume_from_checkpoint=...)`` continues at the next sample.

    python examples/hf_trainer.py                                                   # one process
    torchrun --nproc_per_node 2 examples/hf_trainer.py                              # two (CPU, gloo)
    torchrun --nproc_per_node 2 examples/hf_trainer.py --stop-at-step 40            # checkpoint-40, then stop
    torchrun --nproc_per_node 2 examples/hf_trainer.py --resume <output>/checkpoint-40

The glue is ``shardflow.dataset.hf.StreamingTrainer`` (``pip install 'shardflow-dataset[hf]'``): a plain
``Trainer`` would hand accelerate a torch DataLoader that it re-shards (half the data on 2 ranks; shardflow
refuses it) and would resume by reading the trained samples again. Without ``--remote`` the example writes a
tiny dataset of its own first.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from tiny_data import CLASSES, FEATURES, default_folder, ensure_dataset, recipe_parser, write_record
from transformers import TrainerCallback, TrainingArguments

from shardflow.dataset import StreamingDataset
from shardflow.dataset.hf import StreamingTrainer


class Classifier(torch.nn.Module):
    """A linear classifier taking a batch's columns as keyword arguments, as Trainer passes them."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(FEATURES, CLASSES)
        self.seen: list[int] = []

    def forward(self, id: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.training:
            self.seen.extend(id.tolist())
        return {"loss": torch.nn.functional.cross_entropy(self.net(x), y)}


class StopAt(TrainerCallback):
    """Ends training after global step ``step`` (whose checkpoint ``save_steps`` writes)."""

    def __init__(self, step: int | None) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        if state.global_step == self.step:
            control.should_training_stop = True


def main() -> None:
    parser = recipe_parser(__doc__)
    parser.add_argument("--output", type=Path, default=default_folder("hf-trainer"), help="checkpoints")
    parser.add_argument("--stop-at-step", type=int, default=None, help="checkpoint there and stop")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    remote = ensure_dataset(args.remote, args.samples)
    training = TrainingArguments(
        output_dir=str(args.output),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        learning_rate=0.1,
        save_strategy="steps" if args.stop_at_step else "epoch",
        save_steps=args.stop_at_step or 500,
        dataloader_num_workers=args.workers,
        use_cpu=True,
        ddp_backend="gloo" if "RANK" in os.environ else None,
        ddp_find_unused_parameters=False,
        report_to=[],
        disable_tqdm=True,
        logging_steps=10,
    )
    dataset = StreamingDataset(remote=str(remote), local=args.cache, shuffle=True, shuffle_seed=7)
    model = Classifier()
    trainer = StreamingTrainer(
        model=model, args=training, train_dataset=dataset, callbacks=[StopAt(args.stop_at_step)]
    )
    result = trainer.train(resume_from_checkpoint=args.resume)
    write_record(args.record, training.process_index, model.seen, len(dataset))
    if trainer.is_world_process_zero():
        print(
            f"trained to step {result.global_step} on {training.world_size} process(es); "
            f"mean loss {result.training_loss:.3f}"
        )


if __name__ == "__main__":
    main()
