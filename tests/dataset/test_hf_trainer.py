"""shardflow.dataset.hf.StreamingTrainer in one process: stopped at a checkpoint mid-epoch 1 and resumed from
it, every sample once per epoch and a new order in epoch 1; bad input refused. The 2-process recipe is
tested in tests/examples/test_hf_trainer.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from shardflow.dataset import DatasetConfigError, StreamingDataset  # noqa: E402
from shardflow.dataset.hf import StreamingTrainer  # noqa: E402

BATCH = 50  # 20 steps an epoch of the 1,000 token samples


class Recorder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[int] = []

    def forward(self, id: torch.Tensor, tokens: torch.Tensor, text: list[str]) -> dict[str, torch.Tensor]:
        self.seen.extend(id.tolist())
        return {"loss": (self.weight * tokens.float().mean()).sum()}


class StopAt(transformers.TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        if state.global_step == 25:
            control.should_training_stop = True


def _train(remote: Path, tmp: Path, name: str, resume: str | None = None) -> list[int]:
    args = transformers.TrainingArguments(
        output_dir=str(tmp / "out"), per_device_train_batch_size=BATCH, num_train_epochs=2, save_steps=25,
        use_cpu=True, report_to=[], disable_tqdm=True, learning_rate=0.0,
    )  # fmt: skip
    model = Recorder()
    dataset = StreamingDataset(remote=str(remote), local=str(tmp / name), shuffle=True)
    trainer = StreamingTrainer(model=model, args=args, train_dataset=dataset, callbacks=[StopAt()])
    trainer.train(resume_from_checkpoint=resume)
    return model.seen


def test_stop_mid_epoch_and_resume_from_the_checkpoint(tokens_remote: Path, tmp_path: Path) -> None:
    first = _train(tokens_remote, tmp_path, "a")
    assert len(first) == 25 * BATCH and sorted(first[:1000]) == list(range(1000))
    rest = _train(tokens_remote, tmp_path, "b", resume=str(tmp_path / "out" / "checkpoint-25"))
    assert sorted(first[1000:] + rest) == list(range(1000)), "the resumed epoch lost or repeated samples"
    assert first[1000:] != first[:250]


def test_refuses_a_dataset_that_is_not_streaming(tmp_path: Path) -> None:
    args = transformers.TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    trainer = StreamingTrainer(model=Recorder(), args=args, train_dataset=[{"id": 1}])  # type: ignore[arg-type]
    with pytest.raises(DatasetConfigError, match="trains from a StreamingDataset, not list"):
        trainer.get_train_dataloader()
