"""cifar10: batches built in the exact format of cifar-10-batches-py, read back pixel for pixel."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np

from shardflow.convert import Options, cifar10


def _folder(root: Path, per_batch: int = 30) -> dict[str, tuple[np.ndarray, list[int]]]:
    """The six batch files and batches.meta; returns name -> (N x 3072 data, labels)."""
    rng = np.random.default_rng(0)
    root.mkdir()
    made = {}
    for name in [*cifar10.SPLITS["train"], "test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"{name}_{k}.png".encode() for k in range(per_batch)],
        }
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
        made[name] = (data, labels)
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    meta = {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return made


def _check(samples: list[dict], made: dict, names: list[str]) -> None:
    data = np.concatenate([made[name][0] for name in names])
    labels = [label for name in names for label in made[name][1]]
    assert len(samples) == len(labels)
    for k, sample in enumerate(samples):
        red, green, blue = data[k].reshape(3, 1024)
        assert sample["x"].shape == (32, 32, 3)
        assert (sample["x"][:, :, 0].ravel() == red).all() and (sample["x"][:, :, 2].ravel() == blue).all()
        assert (sample["x"][:, :, 1].ravel() == green).all() and sample["y"] == labels[k]


def test_both_splits_by_default_into_train_and_test(tmp_path: Path, reader, caplog) -> None:
    made = _folder(tmp_path / "cifar")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert cifar10.main([str(tmp_path / "cifar"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["test", "train"]
    for split, names in cifar10.SPLITS.items():
        _check(reader(out / split), made, names)
        assert json.loads((out / split / "classes.json").read_text())["classes"][9] == "truck"
    assert f"{tmp_path / 'cifar' / 'data_batch_5'}: 30 images" in caplog.text
    assert f"{tmp_path / 'cifar' / 'test_batch'}: 30 images" in caplog.text


def test_split_chooses_one(tmp_path: Path, reader) -> None:
    made = _folder(tmp_path / "cifar")
    out = tmp_path / "out"
    assert cifar10.main([str(tmp_path / "cifar"), "--split", "train", "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["train"]
    _check(reader(out / "train"), made, cifar10.SPLITS["train"])
    summaries = cifar10.cifar10_to_mds(str(tmp_path / "cifar"), Options(str(tmp_path / "api")), split="test")
    assert list(summaries) == ["test"] and summaries["test"].samples == 30
    assert [p.name for p in (tmp_path / "api").iterdir()] == ["test"]
    _check(reader(tmp_path / "api" / "test"), made, ["test_batch"])


def test_one_and_four_workers_give_the_same_samples(tmp_path: Path, reader) -> None:
    _folder(tmp_path / "cifar")
    argv = [str(tmp_path / "cifar"), "--split", "train", "--out"]
    assert cifar10.main([*argv, str(tmp_path / "one")]) == 0
    assert cifar10.main([*argv, str(tmp_path / "four"), "--workers", "4", "--partitions", "7"]) == 0
    a, b = reader(tmp_path / "one" / "train"), reader(tmp_path / "four" / "train")
    assert len(a) == 150 and all(
        (x["x"] == y["x"]).all() and x["y"] == y["y"] for x, y in zip(a, b, strict=True)
    )


def test_a_missing_or_foreign_batch_is_a_clear_error(tmp_path: Path, cli) -> None:
    _folder(tmp_path / "cifar")
    (tmp_path / "cifar" / "data_batch_3").unlink()
    result = cli("cifar10", tmp_path / "cifar", "--out", tmp_path / "out")
    assert result.returncode == 1 and f"{tmp_path / 'cifar' / 'data_batch_3'} is missing" in result.stderr
    (tmp_path / "cifar" / "data_batch_3").write_bytes(pickle.dumps({b"data": [1, 2]}))
    result = cli("cifar10", tmp_path / "cifar", "--out", tmp_path / "out")
    assert result.returncode == 1 and "data_batch_3 is not a batch dict" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_failing_test_split_leaves_no_train_split(tmp_path: Path) -> None:
    _folder(tmp_path / "cifar")
    (tmp_path / "cifar" / "test_batch").write_bytes(b"not a pickle")
    out = tmp_path / "out"
    assert cifar10.main([str(tmp_path / "cifar"), "--out", str(out)]) == 1
    assert not [p for p in out.rglob("*") if p.is_file()]
