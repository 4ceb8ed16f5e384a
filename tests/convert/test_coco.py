"""coco: COCO 2017's published layout (annotations/instances_<split>2017.json + <split>2017/*.jpg) into the
reference's columns, read back through StreamingCOCO; 2 workers; --resume after kill -9."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np

from shardflow.convert import Options, coco
from shardflow.dataset.vision import StreamingCOCO

sys.path.insert(0, str(Path(__file__).parent))
from _vision_inputs import coco_item, comparable, kill_midway, make_coco  # noqa: E402


def _read(out: Path, **kwargs) -> list:
    dataset = StreamingCOCO(local=str(out), **kwargs)
    return [comparable(dataset[i]) for i in range(len(dataset))]


def test_both_splits_with_two_workers_read_back_through_streaming_coco(tmp_path: Path, cli, reader) -> None:
    expected = make_coco(tmp_path / "coco", {"train": 30, "val": 9})
    out = tmp_path / "out"
    result = cli(
        "coco", tmp_path / "coco", "--out", out, "--workers", "2", "--partitions", "3", "--size-limit", "3kb"
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["train", "val"]
    for split in ("train", "val"):
        index = json.loads((out / split / "index.json").read_text())
        assert len(index["shards"]) >= 3
        shard = index["shards"][0]
        assert dict(zip(shard["column_names"], shard["column_encodings"], strict=True)) == coco.COLUMNS
        assert _read(out / split) == [coco_item(sample) for sample in expected[split]]
        raw = reader(out / split)
        assert [s["img"].format for s in raw] == ["JPEG"] * len(raw)
        assert [s["img_id"] for s in raw] == [s["img_id"] for s in expected[split]]
        classes = json.loads((out / split / "classes.json").read_text())["classes"]
        assert classes == ["background", "person", "car", "train", "stop sign"]
    assert f"{tmp_path / 'coco' / 'train2017'}: 30 images" in result.stderr


def test_stored_image_is_the_file_and_transform_gets_the_references_arguments(tmp_path: Path) -> None:
    expected = make_coco(tmp_path / "coco", {"val": 4})
    summaries = coco.coco_to_mds(str(tmp_path / "coco"), Options(str(tmp_path / "out")), split="val")
    assert list(summaries) == ["val"] and summaries["val"].samples == 4
    seen = []

    def transform(image, size, boxes, labels):
        seen.append((image.mode, size, boxes.dtype, boxes.shape[1], labels.dtype))
        return image.resize((4, 4)), (4, 4), boxes * 2, labels

    items = StreamingCOCO(local=str(tmp_path / "out" / "val"), transform=transform)
    image, image_id, size, boxes, labels = items[1]
    sample = expected["val"][1]
    assert image.size == (4, 4) and size == (4, 4) and image_id == sample["img_id"]
    assert np.array_equal(boxes, sample["bbox_sizes"] * 2) and np.array_equal(labels, sample["bbox_labels"])
    assert seen == [("RGB", (sample["htot"], sample["wtot"]), np.float32, 4, np.int64)]


def test_kill_then_resume_reads_back_every_image(tmp_path: Path, cli) -> None:
    expected = make_coco(tmp_path / "coco", {"train": 1200})["train"]
    out = tmp_path / "out"
    options = ["--split", "train", "--workers", "2", "--partitions", "30", "--size-limit", "4kb"]
    finished = kill_midway("coco", [tmp_path / "coco", "--out", out, *options], out / "train")
    stamps = {name: (out / "train" / name / "index.json").stat().st_mtime_ns for name in finished}

    result = cli("coco", tmp_path / "coco", "--out", out, "--resume", *options)
    assert result.returncode == 0, result.stderr
    assert f"{len(finished)} of 30 partitions are finished" in result.stderr
    assert {name: (out / "train" / name / "index.json").stat().st_mtime_ns for name in finished} == stamps
    assert _read(out / "train") == [coco_item(sample) for sample in expected]


def test_bad_input_is_named(tmp_path: Path, caplog) -> None:
    make_coco(tmp_path / "coco", {"val": 5})
    root = tmp_path / "coco"
    with caplog.at_level(logging.WARNING):
        # A truncated image is skipped and counted.
        victim = sorted((root / "val2017").iterdir())[1]
        victim.write_bytes(victim.read_bytes()[:-20])
        summaries = coco.coco_to_mds(str(root), Options(str(tmp_path / "a")), split="val")
        assert summaries["val"].samples == 4 and summaries["val"].skipped == [str(victim)]
        assert f"coco: skipping {victim}: not a readable image" in caplog.text
        # A listed image that is absent, and a missing annotation file, stop the run.
        victim.unlink()
        caplog.clear()
        assert coco.main([str(root), "--split", "val", "--out", str(tmp_path / "b")]) == 1
        assert (
            f"1 image(s) that {root / 'annotations' / 'instances_val2017.json'} lists are missing"
            in caplog.text
        )
        caplog.clear()
        assert coco.main([str(root), "--split", "train", "--out", str(tmp_path / "c")]) == 1
        assert f"coco: {root / 'annotations' / 'instances_train2017.json'} is missing" in caplog.text
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").rglob("*.mds"))
