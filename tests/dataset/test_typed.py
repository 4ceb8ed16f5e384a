"""Typed datasets over what shardflow-convert writes: (image, target) pairs and text, with transforms."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shardflow.dataset import (
    DatasetConfigError,
    StreamingCIFAR10,
    StreamingDataLoader,
    StreamingImageFolder,
    StreamingText,
)
from shardflow.format import MDSWriter

CLASSES = ["cat", "dog", "eel"]


def _jpeg(seed: int) -> bytes:
    pixels = (np.arange(12 * 16 * 3).reshape(12, 16, 3) * (seed + 1) % 256).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[tuple[int, int], bytes]]:
    """A class-per-folder tree converted by ``python -m shardflow.convert.imagefolder``."""
    base = tmp_path_factory.mktemp("imagefolder")
    sources = {}
    for label, name in enumerate(CLASSES):
        (base / "tree" / name).mkdir(parents=True)
        for k in range(7):
            data = _jpeg(label * 10 + k)
            (base / "tree" / name / f"{k:02d}.jpg").write_bytes(data)
            sources[(label, k)] = data
    command = [
        sys.executable,
        "-m",
        "shardflow.convert.imagefolder",
        str(base / "tree"),
        "--out",
        str(base / "mds"),
        "--workers",
        "1",
        "--progress",
        "never",
        "--quiet",
    ]
    subprocess.run(command, check=True, timeout=300)
    return base / "mds", sources


def test_image_folder_pairs_decode_to_the_source_images(imagefolder, tmp_path: Path) -> None:
    remote, sources = imagefolder
    ds = StreamingImageFolder(remote=str(remote), local=str(tmp_path), target_transform=lambda y: CLASSES[y])
    assert ds.classes == CLASSES and ds.class_to_idx == {"cat": 0, "dog": 1, "eel": 2}
    pairs = [ds[i] for i in range(ds.size)]
    assert len(pairs) == 21
    decoded = {
        label: [
            np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            for (lab, _), data in sorted(sources.items())
            if lab == label
        ]
        for label in range(3)
    }
    for image, name in pairs:
        assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (16, 12)
        assert any(np.array_equal(np.asarray(image), ref) for ref in decoded[CLASSES.index(name)])


def test_image_folder_through_a_loader_with_a_transform(imagefolder, tmp_path: Path) -> None:
    remote, _ = imagefolder
    ds = StreamingImageFolder(
        remote=str(remote),
        local=str(tmp_path),
        shuffle=True,
        batch_size=4,
        transform=lambda image: torch.from_numpy(np.asarray(image).copy()),
    )
    batches = list(StreamingDataLoader(ds, batch_size=4, num_workers=2))
    images, labels = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert images.shape == (21, 12, 16, 3) and sorted(labels.tolist()) == [0] * 7 + [1] * 7 + [2] * 7


def test_cifar10_pairs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    with MDSWriter(out=str(tmp_path / "c10"), columns={"x": "ndarray:uint8:32,32,3", "y": "int"}) as writer:
        for k, array in enumerate(arrays):
            writer.write({"x": array, "y": k % 10})
    (tmp_path / "c10" / "classes.json").write_text(json.dumps({"classes": [f"c{k}" for k in range(10)]}))
    ds = StreamingCIFAR10(local=str(tmp_path / "c10"), transform=np.asarray)
    assert ds.classes[3] == "c3"
    for k in range(10):
        image, label = ds[k]
        assert np.array_equal(image, arrays[k]) and label == k


def test_text_with_a_transform(tmp_path: Path) -> None:
    with MDSWriter(out=str(tmp_path / "text"), columns={"text": "str", "url": "str"}) as writer:
        for k in range(50):
            writer.write({"text": "word " * k, "url": f"u{k}"})
    ds = StreamingText(local=str(tmp_path / "text"), transform=str.split)
    assert sorted(len(words) for words in ds) == list(range(50))
    with pytest.raises(DatasetConfigError, match="text_column='body'"):
        StreamingText(local=str(tmp_path / "text"), text_column="body")
    with pytest.raises(DatasetConfigError, match=r"reads samples \{x, y\}"):
        StreamingImageFolder(local=str(tmp_path / "text"))
