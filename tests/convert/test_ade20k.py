"""ade20k: ADEChallengeData2016's published layout (images/ and annotations/, training/ and validation/)
into ``{uid, x: jpeg, y: png}``, read back through StreamingADE20K; 2 workers; --resume after kill -9."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from shardflow.convert import Options, ade20k
from shardflow.dataset.vision import StreamingADE20K

sys.path.insert(0, str(Path(__file__).parent))
from _vision_inputs import ADE_EXCLUDED, ade20k_item, comparable, kill_midway, make_ade20k  # noqa: E402


def _read(out: Path, **kwargs) -> list:
    dataset = StreamingADE20K(local=str(out), **kwargs)
    return [comparable(dataset[i]) for i in range(len(dataset))]


def test_both_splits_with_two_workers_read_back_through_streaming_ade20k(tmp_path: Path, cli, reader) -> None:
    expected = make_ade20k(tmp_path / "ade", {"train": 24, "val": 7})
    out = tmp_path / "out"
    result = cli(
        "ade20k", tmp_path / "ade", "--out", out, "--workers", "2", "--partitions", "3", "--size-limit", "4kb"
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["train", "val"]
    for split in ("train", "val"):
        shard = json.loads((out / split / "index.json").read_text())["shards"][0]
        assert dict(zip(shard["column_names"], shard["column_encodings"], strict=True)) == ade20k.COLUMNS
        assert _read(out / split) == [ade20k_item(sample) for sample in expected[split]]
        raw = reader(out / split)
        assert [s["uid"] for s in raw] == [s["uid"] for s in expected[split]]
        assert [(s["x"].format, s["y"].format, s["y"].mode) for s in raw] == [("JPEG", "PNG", "L")] * len(raw)
    assert ADE_EXCLUDED.encode() not in [s["uid"] for s in reader(out / "train")]
    assert len(expected["train"]) == 24


def test_transforms_are_applied_joint_first(tmp_path: Path) -> None:
    expected = make_ade20k(tmp_path / "ade", {"val": 3})["val"]
    ade20k.ade20k_to_mds(str(tmp_path / "ade"), Options(str(tmp_path / "out")), split="val")
    calls = []

    def joint(pair):
        calls.append("joint")
        image, mask = pair
        return image.crop((0, 0, 4, 4)), mask.crop((0, 0, 4, 4))

    def image_only(image):
        calls.append("x")
        return image.convert("L")

    def mask_only(mask):
        calls.append("y")
        return mask.size

    dataset = StreamingADE20K(
        local=str(tmp_path / "out" / "val"),
        joint_transform=joint,
        transform=image_only,
        target_transform=mask_only,
    )
    image, mask = dataset[2]
    assert calls == ["joint", "x", "y"] and image.mode == "L" and image.size == (4, 4) and mask == (4, 4)
    plain = comparable(StreamingADE20K(local=str(tmp_path / "out" / "val"))[2])
    assert plain == ade20k_item(expected[2])


def test_kill_then_resume_reads_back_every_pair(tmp_path: Path, cli) -> None:
    expected = make_ade20k(tmp_path / "ade", {"train": 1000})["train"]
    out = tmp_path / "out"
    options = ["--split", "train", "--workers", "2", "--partitions", "30", "--size-limit", "4kb"]
    finished = kill_midway("ade20k", [tmp_path / "ade", "--out", out, *options], out / "train")
    stamps = {name: (out / "train" / name / "index.json").stat().st_mtime_ns for name in finished}

    result = cli("ade20k", tmp_path / "ade", "--out", out, "--resume", *options)
    assert result.returncode == 0, result.stderr
    assert f"{len(finished)} of 30 partitions are finished" in result.stderr
    assert {name: (out / "train" / name / "index.json").stat().st_mtime_ns for name in finished} == stamps
    assert _read(out / "train") == [ade20k_item(sample) for sample in expected]


def test_bad_input_is_named(tmp_path: Path, caplog) -> None:
    make_ade20k(tmp_path / "ade", {"val": 4})
    root = tmp_path / "ade"
    masks = root / "annotations" / "validation"
    with caplog.at_level(logging.WARNING):
        victim = sorted(masks.iterdir())[0]
        victim.write_bytes(victim.read_bytes()[:-30])  # truncated: skipped and counted
        summaries = ade20k.ade20k_to_mds(str(root), Options(str(tmp_path / "a")), split="val")
        assert summaries["val"].samples == 3 and summaries["val"].skipped == [str(victim)]
        assert f"ade20k: skipping {victim}: not a readable image" in caplog.text
        victim.unlink()  # an image without its mask stops the run
        caplog.clear()
        assert ade20k.main([str(root), "--split", "val", "--out", str(tmp_path / "b")]) == 1
        assert (
            f"1 image(s) of {root / 'images' / 'validation'} lack their mask; missing: {victim}"
            in caplog.text
        )
        caplog.clear()
        assert ade20k.main([str(root), "--split", "train", "--out", str(tmp_path / "c")]) == 1
        assert f"ade20k: {root / 'images' / 'training'} is not a folder" in caplog.text
