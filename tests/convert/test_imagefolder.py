"""imagefolder: JPEG bytes stored as they are, class indexes, classes.json, corrupt images skipped."""

from __future__ import annotations

import io
import json
import logging
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


def test_round_trip_bytes_labels_and_classes(tmp_path: Path, reader, caplog) -> None:
    made = _tree(tmp_path / "in")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert imagefolder.main([str(tmp_path / "in"), "--out", str(out), "--size-limit", "2000"]) == 0
    samples = reader(out)
    expected = [made[path] for path in sorted(made)]
    assert [(s["x"], int(s["y"])) for s in samples] == expected
    assert json.loads((out / "classes.json").read_text()) == {"classes": CLASSES}
    size = sum(len(data) for data, _ in made.values())
    assert f"{tmp_path / 'in'}: 36 images, {size:,} bytes" in caplog.text  # the summary, per tree


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


def _encoded(kind: str, size: tuple[int, int] = (24, 16)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.effect_noise(size, 40).convert("RGB").save(buffer, kind)
    return buffer.getvalue()


def test_default_check_skips_truncated_and_fake_images_and_keeps_valid_ones(
    tmp_path: Path, reader, cli
) -> None:
    made = _tree(tmp_path / "in", per_class=2)
    jpeg, png = _encoded("JPEG"), _encoded("PNG")
    cat, dog, zebra = (tmp_path / "in" / name for name in CLASSES)
    good_png = cat / "good.png"
    good_png.write_bytes(png)
    padded = dog / "padded.jpg"  # trailing padding after the end marker, as some cameras write
    padded.write_bytes(jpeg + b"\x00" * 16)
    bad = {
        dog / "truncated.jpg": jpeg[: len(jpeg) * 2 // 3],
        zebra / "text.jpg": b"just some text that is not an image\n",
        cat / "truncated.png": png[: len(png) - 20],
        zebra / "broken.png": png[:8] + b"\x00\x00\x00\x0dXXXX" + png[16:],  # signature, no IHDR
    }
    for path, data in bad.items():
        path.write_bytes(data)
    made[str(good_png)] = (png, 0)
    made[str(padded)] = (jpeg + b"\x00" * 16, 1)
    result = cli("imagefolder", tmp_path / "in", "--out", tmp_path / "out", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert f"{len(bad)} skipped" in result.stderr
    for path in bad:
        assert str(path) in result.stderr
    assert [(s["x"], s["y"]) for s in reader(tmp_path / "out")] == [made[p] for p in sorted(made)]


def test_verify_uses_pillow_and_no_verify_keeps_everything(tmp_path: Path, reader, cli) -> None:
    made = _tree(tmp_path / "in", per_class=2)
    png = _encoded("PNG")
    flipped = png[:40] + bytes([png[40] ^ 1]) + png[41:]  # whole structure, a wrong chunk checksum
    (tmp_path / "in" / "cat" / "crc.png").write_bytes(flipped)
    (tmp_path / "in" / "dog" / "text.jpg").write_bytes(b"not an image")
    quick = cli("imagefolder", tmp_path / "in", "--out", tmp_path / "quick")
    assert quick.returncode == 0 and "1 skipped" in quick.stderr, quick.stderr  # only text.jpg
    full = cli("imagefolder", tmp_path / "in", "--out", tmp_path / "full", "--verify")
    assert full.returncode == 0 and "2 skipped" in full.stderr and "crc.png" in full.stderr, full.stderr
    assert [(s["x"], s["y"]) for s in reader(tmp_path / "full")] == [made[p] for p in sorted(made)]
    none = cli("imagefolder", tmp_path / "in", "--out", tmp_path / "none", "--no-verify")
    assert none.returncode == 0 and "skipped" not in none.stderr, none.stderr
    assert len(reader(tmp_path / "none")) == len(made) + 2
    both = cli("imagefolder", tmp_path / "in", "--out", tmp_path / "both", "--verify", "--no-verify")
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_structural_check_of_each_kind() -> None:
    for kind in ("JPEG", "PNG", "GIF", "BMP", "WEBP"):
        data = _encoded(kind, (64, 48))
        assert imagefolder.looks_valid(data) is True, kind
        assert imagefolder.looks_valid(data[: len(data) // 2]) is False, kind
    tiff = _encoded("TIFF")
    assert imagefolder.looks_valid(tiff) is True
    assert imagefolder.looks_valid(tiff[:4] + b"\xff\xff\xff\x00" + tiff[8:]) is False
    assert imagefolder.looks_valid(_encoded("PPM")) is None  # left to Pillow
    assert imagefolder.looks_valid(b"hello") is None
