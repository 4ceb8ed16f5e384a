"""imagefolder: JPEG bytes stored as they are, class indexes, classes.json, corrupt images skipped."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

from shardflow.convert import imagefolder

CLASSES = ["cat", "dog", "zebra"]


def _tree(root: Path, per_class: int = 12) -> dict[str, tuple[bytes, int]]:
    """A class-per-folder tree of small JPEGs; returns path -> (bytes, label)."""
    from PIL import Image

    rng = random.Random(0)
    made = {}
    for label, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True)
        for k in range(per_class):
            image = Image.new(
                "RGB", (rng.randint(8, 40), rng.randint(8, 40)), tuple(rng.randrange(256) for _ in "rgb")
            )
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=rng.randint(50, 95))
            path = folder / f"img{k:03d}.jpg"
            path.write_bytes(buffer.getvalue())
            made[str(path)] = (buffer.getvalue(), label)
    return made


def test_round_trip_bytes_labels_and_classes(tmp_path: Path, reader) -> None:
    made = _tree(tmp_path / "in")
    out = tmp_path / "out"
    assert imagefolder.main([str(tmp_path / "in"), "--out", str(out), "--size-limit", "2000"]) == 0
    samples = reader(out)
    expected = [made[path] for path in sorted(made)]
    assert [(s["x"], int(s["y"])) for s in samples] == expected
    assert json.loads((out / "classes.json").read_text()) == {"classes": CLASSES}


def test_one_and_four_workers_give_the_same_samples(tmp_path: Path, reader) -> None:
    _tree(tmp_path / "in", per_class=20)
    one, four = tmp_path / "one", tmp_path / "four"
    assert imagefolder.main([str(tmp_path / "in"), "--out", str(one)]) == 0
    assert (
        imagefolder.main([str(tmp_path / "in"), "--out", str(four), "--workers", "4", "--partitions", "7"])
        == 0
    )
    assert len(list(four.glob("part.*/index.json"))) == 7
    a, b = reader(one), reader(four)
    assert len(a) == 60 and [(s["x"], s["y"]) for s in a] == [(s["x"], s["y"]) for s in b]


def test_corrupt_images_are_skipped_and_counted(tmp_path: Path, reader, cli) -> None:
    made = _tree(tmp_path / "in", per_class=3)
    bad = tmp_path / "in" / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (tmp_path / "in" / "cat" / "notes.txt").write_text("not an image, not listed")
    result = cli("imagefolder", tmp_path / "in", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert str(bad) in result.stderr and "1 skipped" in result.stderr
    assert [(s["x"], s["y"]) for s in reader(tmp_path / "out")] == [made[p] for p in sorted(made)]


def test_missing_folder_is_a_clear_error_and_writes_nothing(tmp_path: Path, cli) -> None:
    result = cli("imagefolder", tmp_path / "nope", "--out", tmp_path / "out")
    assert result.returncode == 1
    assert f"{tmp_path / 'nope'} is not a folder" in result.stderr
    assert not (tmp_path / "out").exists()


def test_non_empty_out_is_refused_without_resume(tmp_path: Path, cli) -> None:
    _tree(tmp_path / "in", per_class=2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    result = cli("imagefolder", tmp_path / "in", "--out", tmp_path / "out")
    assert result.returncode == 1 and "is not empty" in result.stderr and "--resume" in result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
