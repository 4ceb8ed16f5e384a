"""PyTorch Lightning: a ``LightningDataModule`` whose loader's position lives in Lightning's checkpoints.

``pip install 'shardflow-dataset[lightning]'`` (Lightning 2.x, imported as ``lightning.pytorch``).

What it takes care of:

- the dataset may be given as a function that builds it, called in ``setup()``: in each process Lightning
  starts, once its process group exists (a dataset built earlier also works: it reads the world in force);
- the loader is a :class:`StreamingDataLoader`; Lightning injects no ``DistributedSampler`` into a loader
  over an iterable dataset, so each rank reads the share the dataset gives it and nothing else;
- each ``iter()`` of the training loader is the next epoch (Lightning calls no ``set_epoch`` here);
- the training loader's ``state_dict()`` is saved in every checkpoint (``state_dict`` of this module) and
  restored by ``trainer.fit(..., ckpt_path=...)``, also from a checkpoint written at an epoch's end, after
  which Lightning itself restores no loader state: the next epoch then starts with its own new order rather
  than epoch 0's again.

For validation, subclass it and return ``self.make_loader(<a StreamingDataset>)`` from ``val_dataloader``
(a validation loader holds no position worth saving: each of its ``iter()`` reads the whole split).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    from lightning.pytorch import LightningDataModule
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "shardflow.dataset.lightning needs Lightning 2.x (import lightning.pytorch): "
        "pip install 'shardflow-dataset[lightning]'"
    ) from error

from shardflow.dataset.dataset import StreamingDataset
from shardflow.dataset.loader import StreamingDataLoader

__all__ = ["StreamingDataModule"]

DatasetSource = StreamingDataset | Callable[[], StreamingDataset]


def _build(source: DatasetSource) -> StreamingDataset:
    """The dataset ``source`` is or builds; refuse anything else."""
    dataset = source() if callable(source) and not isinstance(source, StreamingDataset) else source
    if not isinstance(dataset, StreamingDataset):
        raise TypeError(
            f"StreamingDataModule's train must be a StreamingDataset or a function returning one, "
            f"not {type(dataset).__name__}"
        )
    return dataset


class StreamingDataModule(LightningDataModule):
    """Training data for ``lightning.pytorch.Trainer`` from a StreamingDataset.

    Args:
        train: The training dataset, or a function without arguments that builds it (called in ``setup``).
        batch_size: Samples per batch and rank; given to a dataset that has none.
        **loader_kwargs: More :class:`StreamingDataLoader` arguments (``num_workers``, ``drop_last``,
            ``persistent_workers``, ...).
    """

    def __init__(self, train: DatasetSource, batch_size: int, **loader_kwargs: Any) -> None:
        super().__init__()
        self._source = train
        self.batch_size = batch_size
        self.loader_kwargs = loader_kwargs
        self.train_dataset: StreamingDataset | None = None
        self.train_loader: StreamingDataLoader | None = None
        self._resume: dict[str, Any] | None = None

    def setup(self, stage: str) -> None:
        """Build the dataset if given as a function (in every process, after the process group is set up)."""
        if self.train_dataset is None:
            self.train_dataset = _build(self._source)

    def make_loader(self, dataset: StreamingDataset) -> StreamingDataLoader:
        """A :class:`StreamingDataLoader` over ``dataset`` with this module's batch size and arguments."""
        return StreamingDataLoader(dataset, batch_size=self.batch_size, **self.loader_kwargs)

    def train_dataloader(self) -> StreamingDataLoader:
        """The training loader; it continues from the checkpoint being resumed, if any."""
        if self.train_dataset is None:
            raise RuntimeError(
                "StreamingDataModule.train_dataloader() before setup(): Lightning calls setup first"
            )
        self.train_loader = self.make_loader(self.train_dataset)
        if self._resume is not None:
            self.train_loader.load_state_dict(self._resume)
            self._resume = None
        return self.train_loader

    def state_dict(self) -> dict[str, Any]:
        """What Lightning saves in a checkpoint: the training loader's position."""
        if self.train_loader is None:
            return {}
        return {"train_loader": self.train_loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the training loader from a checkpoint's :meth:`state_dict` (on its next ``iter()``)."""
        state = state_dict.get("train_loader")
        if state is None:
            return
        if self.train_loader is not None:
            self.train_loader.load_state_dict(state)
        else:
            self._resume = state
