"""Small inputs in the published layouts of COCO 2017, ADE20K (ADEChallengeData2016) and img2dataset's
output (LAION-400M), with the samples a conversion must give; and a kill -9 of a converter midway.

Shared by tests/convert/test_{coco,ade20k,laion}.py and tests/compat/test_reference_starter_vision.py
(which put this folder on ``sys.path``).
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CATEGORIES = [(1, "person"), (3, "car"), (7, "train"), (12, "stop sign")]  # COCO's ids are not contiguous
ADE_EXCLUDED = "00001701"  # one of the training uids the reference leaves out


def jpeg(width: int, height: int, seed: int) -> bytes:
    """A small JPEG of noise, distinct per ``seed``."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def png_mask(width: int, height: int, seed: int) -> bytes:
    """A small 8-bit PNG of class indices (an ADE20K annotation)."""
    pixels = np.random.default_rng(seed).integers(0, 151, size=(height, width), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


# -- COCO ------------------------------------------------------------------------------------------------


def make_coco(root: Path, counts: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """COCO's folder with ``counts[split]`` annotated images per split (plus one without annotations,
    which is left out); returns each split's expected samples, in order."""
    (root / "annotations").mkdir(parents=True)
    expected: dict[str, list[dict[str, Any]]] = {}
    for s, (split, count) in enumerate(counts.items()):
        folder = root / f"{split}2017"
        folder.mkdir()
        rng = np.random.default_rng(s)
        images, notes, samples = [], [], []
        for k in range(count + 1):
            image_id = 1000 * (s + 1) + 7 * k  # ids as COCO has them: not positions
            width, height = 8 + k % 5, 6 + k % 4
            name = f"{image_id:012d}.jpg"
            data = jpeg(width, height, seed=image_id)
            (folder / name).write_bytes(data)
            images.append({"id": image_id, "file_name": name, "height": height, "width": width})
            if k == 2:  # no annotation: not a sample
                continue
            boxes, labels = [], []
            for _ in range(1 + k % 3):
                left, top = float(rng.uniform(0, width - 2)), float(rng.uniform(0, height - 2))
                box = [round(left, 2), round(top, 2), round(float(rng.uniform(1, 2)), 2), 1.5]
                position = int(rng.integers(0, len(CATEGORIES)))
                notes.append({"id": len(notes) + 1, "image_id": image_id, "bbox": box, "area": 1.0,
                              "iscrowd": 0, "category_id": CATEGORIES[position][0]})  # fmt: skip
                boxes.append(box)
                labels.append(position + 1)
            sizes = [
                (b[0] / width, b[1] / height, (b[0] + b[2]) / width, (b[1] + b[3]) / height) for b in boxes
            ]
            samples.append({"img": data, "img_id": image_id, "htot": height, "wtot": width,
                            "bbox_sizes": np.array(sizes, dtype=np.float32),
                            "bbox_labels": np.array(labels, dtype=np.int64)})  # fmt: skip
        categories = [{"id": i, "name": n, "supercategory": "thing"} for i, n in CATEGORIES]
        document = {
            "info": {},
            "licenses": [],
            "images": images,
            "annotations": notes,
            "categories": categories,
        }
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(document))
        expected[split] = samples
    return expected


def coco_item(sample: dict[str, Any]) -> tuple[Any, ...]:
    """What StreamingCOCO (either library's) yields for an expected sample, comparable with ``==``."""
    image = Image.open(io.BytesIO(sample["img"])).convert("RGB")
    return comparable((image, sample["img_id"], (sample["htot"], sample["wtot"]), sample["bbox_sizes"],
                       sample["bbox_labels"]))  # fmt: skip


# -- ADE20K ----------------------------------------------------------------------------------------------


def make_ade20k(root: Path, counts: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """ADEChallengeData2016 with ``counts[split]`` image/mask pairs per split (training also gets
    :data:`ADE_EXCLUDED`, which is left out); returns each split's expected samples, in order."""
    expected: dict[str, list[dict[str, Any]]] = {}
    for split, folder in (("train", "training"), ("val", "validation")):
        if split not in counts:
            continue
        (root / "images" / folder).mkdir(parents=True)
        (root / "annotations" / folder).mkdir(parents=True)
        uids = [f"{3 * k + 1:08d}" for k in range(counts[split])]
        if split == "train":
            uids.append(ADE_EXCLUDED)
        samples = []
        for uid in sorted(uids):
            seed = int(uid) + (0 if split == "train" else 50_000)
            image, mask = jpeg(10 + seed % 4, 8 + seed % 3, seed), png_mask(10 + seed % 4, 8 + seed % 3, seed)
            (root / "images" / folder / f"ADE_{split}_{uid}.jpg").write_bytes(image)
            (root / "annotations" / folder / f"ADE_{split}_{uid}.png").write_bytes(mask)
            if uid != ADE_EXCLUDED:
                samples.append({"uid": uid.encode(), "x": image, "y": mask})
        expected[split] = samples
    return expected


def ade20k_item(sample: dict[str, Any]) -> tuple[Any, ...]:
    """What StreamingADE20K (either library's) yields for an expected sample, comparable with ``==``."""
    return comparable((Image.open(io.BytesIO(sample["x"])), Image.open(io.BytesIO(sample["y"]))))


# -- img2dataset (LAION-400M) ----------------------------------------------------------------------------


def make_img2dataset(folder: Path, shards: int, per_shard: int, output_format: str) -> list[dict[str, Any]]:
    """img2dataset's output of a LAION-style URL list (``--save_additional_columns
    '["NSFW","similarity","LICENSE"]'``) in ``output_format`` (``parquet``, ``webdataset`` or ``files``):
    ``NNNNN.parquet`` + ``NNNNN_stats.json`` per shard, images in the Parquet file, ``NNNNN.tar`` or
    ``NNNNN/``. Every fourth row failed to download. Returns the samples the reference's converter writes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    schema = pa.schema([
        ("url", pa.string()), ("caption", pa.string()), ("NSFW", pa.string()), ("similarity", pa.float64()),
        ("LICENSE", pa.string()), ("key", pa.string()), ("status", pa.string()),
        ("error_message", pa.string()),
        ("width", pa.int32()), ("height", pa.int32()), ("original_width", pa.int32()),
        ("original_height", pa.int32()), ("exif", pa.string()), ("sha256", pa.string()),
    ])  # fmt: skip
    if output_format == "parquet":
        schema = schema.append(pa.field("jpg", pa.binary()))
    expected = []
    for shard in range(shards):
        rows: list[dict[str, Any]] = []
        files: dict[str, bytes] = {}
        for k in range(per_shard):
            key = f"{shard:05d}{k:04d}"
            ok = k % 4 != 3
            seed = shard * 10_000 + k
            image = jpeg(6 + k % 5, 5 + k % 3, seed) if ok else None
            row = {
                "url": f"https://example.com/{key}.jpg", "caption": f"a caption {seed} é" if k % 5 else None,
                "NSFW": ["UNLIKELY", "UNSURE", None][k % 3], "similarity": 0.25 + k / 1000,
                "LICENSE": "?" if k % 2 else None, "key": key,
                "status": "success" if ok else "failed_to_download",
                "error_message": None if ok else "HTTP Error 404: Not Found",
                "width": 6 + k % 5 if ok else None, "height": 5 + k % 3 if ok else None,
                "original_width": 60 + k if ok else None, "original_height": 50 + k if ok else None,
                "exif": json.dumps({"Image Make": "x"}) if ok and k % 2 else None, "sha256": None,
            }  # fmt: skip
            if output_format == "parquet":
                row["jpg"] = image
            elif image is not None:
                meta = {name: row[name] for name in schema.names}
                files[f"{key}.jpg"] = image
                files[f"{key}.txt"] = (row["caption"] or "").encode()
                files[f"{key}.json"] = json.dumps(meta, indent=4).encode()
            rows.append(row)
            expected.append({
                "nsfw": row["NSFW"] or "", "similarity": row["similarity"], "license": row["LICENSE"] or "",
                "caption": row["caption"] or "", "url": row["url"], "key": key, "status": row["status"],
                "error_message": row["error_message"] or "", "width": row["width"] or 0,
                "height": row["height"] or 0, "original_width": row["original_width"] or 0,
                "original_height": row["original_height"] or 0, "exif": row["exif"] or "",
                "jpg": image or b"",
            })  # fmt: skip
        table = pa.Table.from_pylist(rows, schema=schema)
        pq.write_table(table, folder / f"{shard:05d}.parquet", row_group_size=max(1, per_shard // 3))
        (folder / f"{shard:05d}_stats.json").write_text(json.dumps({"count": per_shard}))
        if output_format == "webdataset":
            with tarfile.open(folder / f"{shard:05d}.tar", "w") as tar:
                for name, data in files.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        elif output_format == "files":
            (folder / f"{shard:05d}").mkdir()
            for name, data in files.items():
                (folder / f"{shard:05d}" / name).write_bytes(data)
    return expected


def same_laion(got: dict[str, Any], want: dict[str, Any]) -> bool:
    """Whether a sample read back is ``want`` (numpy scalars compare by value; NaN equals NaN)."""
    if set(got) != set(want):
        return False
    for name, value in want.items():
        if isinstance(value, float) and math.isnan(value):
            if not math.isnan(float(got[name])):
                return False
        elif got[name] != value:
            return False
    return True


# -- shared ----------------------------------------------------------------------------------------------


def comparable(value: Any) -> Any:
    """``value`` with PIL images as (mode, size, pixels) and arrays as (dtype, shape, bytes), for ``==``."""
    if isinstance(value, tuple):
        return tuple(comparable(item) for item in value)
    if isinstance(value, Image.Image):
        return ("image", value.mode, value.size, value.tobytes())
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, np.generic):
        return value.item()
    return value


def kill_midway(converter: str, args: list[Any], out: Path, finished: int = 1) -> set[str]:
    """Run ``python -m shardflow.convert.<converter> *args`` and SIGKILL it and its workers once
    ``finished`` partitions under ``out`` are; returns the finished ones (``part.NNNNN``)."""
    command = [sys.executable, "-m", f"shardflow.convert.{converter}", *map(str, args)]
    process = subprocess.Popen(command, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(out.glob("part.*/index.json"))) < finished and process.poll() is None:
        assert time.monotonic() < deadline, "the conversion finished no partition in 2 minutes"
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGKILL)  # the main process and its workers, like a machine going down
    process.wait()
    done = {p.parent.name for p in out.glob("part.*/index.json")}
    assert finished <= len(done) and not (out / "index.json").exists(), "the kill came too late to test"
    return done
