"""shardflow.dataset.lightning.StreamingDataModule in one process: a checkpoint written at an epoch's end
resumes into the next epoch's own order (Lightning alone would replay epoch 0's), and bad input is refused.
The 2-process recipe is tested in tests/examples/test_lightning_ddp.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

from shardflow.dataset import StreamingDataset  # noqa: E402
from shardflow.dataset.lightning import StreamingDataModule  # noqa: E402

BATCH = 50


class Recorder(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[int] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen.extend(batch["id"].tolist())
        return (self.weight * batch["tokens"].float().mean()).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(
    remote: Path, cache: Path, epochs: int, ckpt: Path | None = None, save: Path | None = None
) -> list[int]:
    data = StreamingDataModule(
        lambda: StreamingDataset(remote=str(remote), local=str(cache), shuffle=True), batch_size=BATCH
    )
    model = Recorder()
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=data, ckpt_path=None if ckpt is None else str(ckpt))
    if save is not None:
        trainer.save_checkpoint(save)
    return model.seen


def test_a_checkpoint_at_an_epochs_end_resumes_into_the_next_epoch(
    tokens_remote: Path, tmp_path: Path
) -> None:
    both = _fit(tokens_remote, tmp_path / "a", epochs=2)
    assert sorted(both[:1000]) == sorted(both[1000:]) == list(range(1000))
    assert both[:1000] != both[1000:]
    first = _fit(tokens_remote, tmp_path / "b", epochs=1, save=tmp_path / "end0.ckpt")
    assert first == both[:1000]
    assert _fit(tokens_remote, tmp_path / "c", epochs=2, ckpt=tmp_path / "end0.ckpt") == both[1000:]


def test_refuses_what_is_not_a_streaming_dataset() -> None:
    data = StreamingDataModule(lambda: list(range(10)), batch_size=2)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="must be a StreamingDataset or a function returning one, not list"):
        data.setup("fit")
    with pytest.raises(RuntimeError, match="before setup"):
        StreamingDataModule(lambda: None, batch_size=2).train_dataloader()  # type: ignore[arg-type,return-value]
