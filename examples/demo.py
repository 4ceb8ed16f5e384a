"""shardflow demo: write a dataset with every MDS column type, read it back, print a summary.

Run it with ``hatch run demo`` (see README.md). Later milestones grow it into streaming training from a
local object store.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
from PIL import Image

from shardflow.format import LocalDataset, MDSWriter, get_mds_encodings

log = logging.getLogger("shardflow.demo")

COLUMNS = {
    "bytes": "bytes", "str": "str", "int": "int",
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
    "float16": "float16", "float32": "float32", "float64": "float64",
    "str_int": "str_int", "str_float": "str_float", "str_decimal": "str_decimal",
    "nd_any": "ndarray", "nd_dtype": "ndarray:int32", "nd_static": "ndarray:uint16:2,4",
    "pil": "pil", "jpeg": "jpeg", "png": "png",
    "list_pil": "list[pil]", "list_jpeg": "list[jpeg]", "list_png": "list[png]",
    "jpeg_array": "jpeg_array", "json": "json", "pkl": "pkl",
}


def make_image(i: int) -> Image.Image:
    """A small deterministic RGB image."""
    pixels = (np.arange(16 * 12 * 3).reshape(12, 16, 3) * (i + 1) % 256).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def make_sample(i: int) -> dict:
    """Sample ``i`` of the demo dataset: one value for every column type."""
    image = make_image(i)
    return {
        "bytes": bytes([i % 256]) * (i % 7), "str": f"sample {i}", "int": i * 1_000_003,
        "int8": i % 100 - 50, "int16": i * 3, "int32": -i, "int64": i**3,
        "uint8": i % 256, "uint16": i, "uint32": i * 7, "uint64": i**4,
        "float16": i / 2, "float32": i / 3, "float64": i / 7,
        "str_int": 10**20 + i, "str_float": i / 4, "str_decimal": Decimal(i) / 8,
        "nd_any": np.arange(i % 5 + 1, dtype=np.float64), "nd_dtype": np.arange(3, dtype=np.int32) * i,
        "nd_static": np.full((2, 4), i, dtype=np.uint16),
        "pil": image, "jpeg": image, "png": image,
        "list_pil": [image] * (i % 3), "list_jpeg": [image] * (i % 2), "list_png": [image],
        "jpeg_array": [_jpeg_bytes(image)], "json": {"i": i, "even": i % 2 == 0}, "pkl": {"set": {i}},
    }


def _jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="dataset folder (default: a temporary folder)")
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "demo-dataset"
        started = time.perf_counter()
        with MDSWriter(out=str(out), columns=COLUMNS, compression="zstd", hashes=["sha1", "xxh64"],
                       size_limit=1 << 20, exist_ok=True) as writer:
            for i in range(args.samples):
                writer.write(make_sample(i))
        wrote = time.perf_counter() - started
        index = json.loads((out / "index.json").read_text())
        files = sorted(p.name for p in out.iterdir())
        started = time.perf_counter()
        dataset = LocalDataset(out, allow_unsafe_types=True, validate_hash="sha1")
        checked = 0
        for i, sample in enumerate(dataset):
            expected = make_sample(i)
            assert sample["str"] == expected["str"] and sample["int"] == expected["int"], i
            assert np.array_equal(sample["nd_static"], expected["nd_static"]), i
            assert sample["png"].tobytes() == expected["png"].tobytes(), i
            assert sample["pkl"] == expected["pkl"], i
            checked += 1
        read = time.perf_counter() - started
        print(f"shardflow demo: {len(COLUMNS)} columns covering {len(get_mds_encodings())} MDS encodings")
        print(f"  wrote {args.samples} samples into {len(index['shards'])} zstd shards in {wrote:.2f} s")
        print(f"  files: {', '.join(files[:4])}{', ...' if len(files) > 4 else ''}")
        print(f"  read back and checked {checked} samples (hashes verified) in {read:.2f} s")
        print(f"  sample 7: int={dataset[7]['int']} str={dataset[7]['str']!r} "
              f"nd_any={dataset[7]['nd_any'].tolist()} json={dataset[7]['json']}")
        dataset.close()


if __name__ == "__main__":
    main()
