"""MosaicML Composer: checkpoints written at an epoch's end resume into the next epoch's order.

``pip install 'shardflow-dataset[composer]'`` (Composer 0.32, which needs torch < 2.7.1).

Composer takes a :class:`StreamingDataLoader` as it is: the dataset gives each rank its own share, the
loader reports its ``batch_size`` (Composer's default ``device_train_microbatch_size``), and every
checkpoint carries the dataset's ``state_dict(<samples of the epoch read by all ranks>, True)``, which
``load_path`` hands back to ``load_state_dict``. Mid-epoch that is exact with no help. At an epoch's end,
though, Composer counts 0 samples of the next epoch while the dataset's latest iteration is still the
finished one, so a run resumed from that checkpoint would read the finished epoch's order again (as
mosaicml-streaming does). :class:`EpochEndResume` closes that gap::

    Trainer(train_dataloader=StreamingDataLoader(dataset, batch_size=8), callbacks=[EpochEndResume()], ...)
"""

from __future__ import annotations

from typing import Any

try:
    from composer.core import Callback, State
    from composer.loggers import Logger
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "shardflow.dataset.composer needs MosaicML Composer (import composer): "
        "pip install 'shardflow-dataset[composer]'"
    ) from error

from shardflow.dataset.dataset import StreamingDataset

__all__ = ["EpochEndResume"]


def _train_dataset(state: State) -> StreamingDataset:
    """The StreamingDataset under Composer's training loader; refuse anything else."""
    loader: Any = state.train_dataloader
    dataset = getattr(loader, "dataset", None)
    if not isinstance(dataset, StreamingDataset):
        raise TypeError(
            f"EpochEndResume needs a training loader over a shardflow StreamingDataset (a "
            f"StreamingDataLoader), not {type(loader).__name__} over {type(dataset).__name__}"
        )
    return dataset


class EpochEndResume(Callback):
    """At each epoch's end, start the dataset's next epoch (``set_epoch``) before Composer checkpoints, so
    that the checkpoint holds the next epoch at sample 0; the run itself reads the same epochs either way.
    """

    def fit_start(self, state: State, logger: Logger) -> None:
        _train_dataset(state)  # a wrong loader fails here, not silently at the first epoch's end

    def epoch_end(self, state: State, logger: Logger) -> None:
        _train_dataset(state).set_epoch(int(state.timestamp.epoch))  # Composer counts the next epoch now
