"""Hugging Face ``transformers.Trainer`` over a StreamingDataset: every rank its own share, resumed exactly.

``pip install 'shardflow-dataset[hf]'`` (transformers, which brings accelerate).

``transformers.Trainer`` puts its training dataset into a torch ``DataLoader`` and hands it to accelerate,
whose re-sharding reads a part of a StreamingDataset only (each rank already reads its own share), and it
resumes mid-epoch by reading and dropping the batches already trained on. :class:`StreamingTrainer` is a
``Trainer`` that instead:

- trains from a :class:`StreamingDataLoader` over ``train_dataset`` (accelerate keeps it as it is), with
  the arguments' batch size, ``dataloader_*`` settings and ``data_collator`` (none, the default: whole-batch
  reads, every column of the dataset in each batch; a collator given: the per-sample path, the columns the
  model does not take removed as ``Trainer`` does);
- saves the loader's ``state_dict()`` in each checkpoint (``trainer_state.json``, through the
  :class:`LoaderPosition` callback) and, on ``train(resume_from_checkpoint=...)``, continues at the next
  sample of the epoch the checkpoint was in (or at the next epoch's start) without reading the samples
  already trained on; each further epoch has its own order.

``args.ignore_data_skip`` is refused when resuming (the loader's position is the data's position), and so is
a checkpoint without the loader's state (one that a plain ``Trainer`` wrote).
"""

from __future__ import annotations

import logging
from typing import Any

try:
    from transformers import Trainer, TrainerCallback
    from transformers.data.data_collator import default_data_collator
    from transformers.trainer_callback import ExportableState
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "shardflow.dataset.hf needs transformers: pip install 'shardflow-dataset[hf]'"
    ) from error

if not hasattr(Trainer, "get_resumed_dataloader"):  # pragma: no cover - depends on the environment
    raise ImportError(
        "shardflow.dataset.hf needs a transformers whose Trainer has get_resumed_dataloader (5.x; tested "
        "with 5.25): older ones resume by wrapping the loader in one that reads the trained samples again"
    )

from shardflow.dataset.dataset import StreamingDataset
from shardflow.dataset.errors import DatasetConfigError, StateDictError
from shardflow.dataset.loader import StreamingDataLoader

__all__ = ["StreamingTrainer", "LoaderPosition"]

logger = logging.getLogger(__name__)


class LoaderPosition(TrainerCallback, ExportableState):
    """Keeps the training loader's ``state_dict()`` in each checkpoint's ``trainer_state.json`` and gives
    it back to the loader when training resumes from one. :class:`StreamingTrainer` adds it."""

    def __init__(self) -> None:
        self.loader: StreamingDataLoader | None = None
        self.restored: dict[str, Any] | None = None

    def state(self) -> dict[str, Any]:
        loader_state = None if self.loader is None else self.loader.state_dict()
        return {"args": {}, "attributes": {"loader_state": loader_state}}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        loader = kwargs.get("train_dataloader")
        self.loader = loader if isinstance(loader, StreamingDataLoader) else None
        self.restored = None
        if state.global_step == 0 or self.loader is None:
            return  # a fresh start
        saved = state.stateful_callbacks.get(type(self).__name__)
        loader_state = saved.get("attributes", {}).get("loader_state") if isinstance(saved, dict) else None
        if loader_state is None:
            raise StateDictError(
                f"the checkpoint being resumed (global step {state.global_step}) holds no position of the "
                "StreamingDataLoader: it was not written by StreamingTrainer. Resume from a checkpoint "
                "StreamingTrainer saved, or start training anew"
            )
        if args.ignore_data_skip:
            raise DatasetConfigError(
                "TrainingArguments(ignore_data_skip=True) with StreamingTrainer: the loader resumes at the "
                "checkpoint's sample (it reads nothing twice and skips nothing), which ignore_data_skip "
                "would contradict; leave it False"
            )
        self.loader.load_state_dict(loader_state)
        self.restored = loader_state
        logger.info(
            "StreamingDataLoader resumes epoch %d at sample %d",
            loader_state["epoch"],
            loader_state["sample_in_epoch"],
        )


class StreamingTrainer(Trainer):
    """``transformers.Trainer`` whose training data comes from a :class:`StreamingDataLoader` over
    ``train_dataset`` (a :class:`StreamingDataset`), resumed from its checkpoints at the exact sample.

    Takes ``Trainer``'s arguments.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_callback(LoaderPosition())

    def _position(self) -> LoaderPosition:
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, LoaderPosition):
                return callback
        raise RuntimeError("StreamingTrainer's LoaderPosition callback was removed: add it back")

    def get_train_dataloader(self) -> StreamingDataLoader:  # type: ignore[override]
        """A :class:`StreamingDataLoader` over ``train_dataset`` (accelerate's ``prepare`` keeps it)."""
        dataset = self.train_dataset
        if not isinstance(dataset, StreamingDataset):
            raise DatasetConfigError(
                f"StreamingTrainer trains from a StreamingDataset, not {type(dataset).__name__}: pass "
                "train_dataset=StreamingDataset(...), or use transformers.Trainer for other datasets"
            )
        args = self.args
        collator = None
        if self.data_collator is not default_data_collator:
            collator = self._get_collator_with_removed_columns(self.data_collator, description="training")
        options: dict[str, Any] = {
            "batch_size": self._train_batch_size,
            "drop_last": args.dataloader_drop_last,
            "num_workers": args.dataloader_num_workers,
            "pin_memory": args.dataloader_pin_memory,
            "persistent_workers": args.dataloader_persistent_workers and args.dataloader_num_workers > 0,
            "multiprocessing_context": args.dataloader_multiprocessing_context,
        }
        if collator is not None:
            options["collate_fn"] = collator
        if args.dataloader_prefetch_factor is not None and args.dataloader_num_workers > 0:
            options["prefetch_factor"] = args.dataloader_prefetch_factor
        loader = StreamingDataLoader(dataset, **options)
        return self.accelerator.prepare(loader)

    def get_resumed_dataloader(self, dataloader: Any, num_batches: int) -> Any:
        """The loader itself: :class:`LoaderPosition` has set it to the checkpoint's sample, which must be
        the ``num_batches``-th batch of the epoch that ``Trainer`` counts."""
        restored = self._position().restored
        if restored is None or dataloader is not self._position().loader:
            raise StateDictError(
                "StreamingTrainer resumes mid-epoch from the loader position saved in the checkpoint, and "
                "found none"
            )
        expected = num_batches * self._train_batch_size * self.args.world_size
        if restored["sample_in_epoch"] != expected:
            raise StateDictError(
                f"the checkpoint's loader position (sample {restored['sample_in_epoch']} of epoch "
                f"{restored['epoch']}) is not where Trainer's step count puts it ({num_batches} batches of "
                f"{self._train_batch_size} on {self.args.world_size} rank(s) = sample {expected}): resume "
                "with the batch size, gradient accumulation and number of processes of the saved run"
            )
        return dataloader
