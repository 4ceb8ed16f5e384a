"""Convert an image folder and JSONL files with shardflow, mosaicml-streaming and LitData; print a table.

    python benchmarks/convert_bench.py                # the issue's run: 20,000 JPEGs, 1,000,000 JSONL lines
    python benchmarks/convert_bench.py --scale 0.1    # a tenth of each, for a quick look
    python benchmarks/convert_bench.py --repeat 3     # the best of three fresh runs per case

The inputs are made once in a temporary folder: ``IMAGES`` small JPEGs in 100 class folders (the
ImageNet layout), and ``LINES`` JSONL lines (C4-like ``{text, id, url}``) in 4 files. Each implementation
runs in its own process on the same input (the reference venv from ../shared/reference/setup.sh, or
$SHARDFLOW_REFERENCE_PYTHON, holds mosaicml-streaming 0.13.0 and litdata 0.2.76); the script re-executes
itself with ``--impl``. The time is the conversion alone, after imports:

- shardflow: ``imagefolder_to_mds`` / ``jsonl_to_mds`` with 2 workers (what ``python -m
  shardflow.convert.<name> --workers 2`` runs), images checked by their bytes' structure (the default),
  on a second row unchecked (``--no-verify``: the work the other two do), on a third with Pillow's
  ``verify()`` too (``--verify``);
- mosaicml-streaming: a plain loop (list the files, read each, ``MDSWriter.write``), in one process;
- LitData: ``optimize(fn, inputs, num_workers=2)``, ``fn`` reading one image or yielding one file's lines.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMAGES = 20_000
LINES = 1_000_000
FILES = 4
CLASSES = 100
SIZE_LIMIT = 1 << 26


def make_images(root: Path, count: int) -> None:
    """``count`` small JPEGs (16 to 64 pixels a side) spread over ``CLASSES`` class folders."""
    from PIL import Image

    rng = random.Random(0)
    for k in range(count):
        folder = root / f"n{k % CLASSES:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        size = (rng.randint(16, 64), rng.randint(16, 64))
        image = Image.effect_noise(size, rng.randint(10, 80)).convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        (folder / f"img_{k:07d}.JPEG").write_bytes(buffer.getvalue())


def make_lines(root: Path, count: int) -> None:
    """``count`` C4-like JSON lines in ``FILES`` files."""
    rng = random.Random(0)
    words = ["stream", "shard", "token", "train", "data", "model", "cloud", "index", "sample", "epoch"]
    root.mkdir(parents=True, exist_ok=True)
    per_file = -(-count // FILES)
    for f in range(FILES):
        with open(root / f"c4-{f:05d}.jsonl", "w") as out:
            for k in range(f * per_file, min(count, (f + 1) * per_file)):
                text = " ".join(rng.choice(words) for _ in range(rng.randint(10, 80)))
                out.write(json.dumps({"text": text, "id": k, "url": f"https://example.com/{k}"}) + "\n")


# -- one implementation, in its own process ----------------------------------------------------------------


def _image_items(root: Path) -> list[tuple[str, int]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    return [
        (str(path), label) for label, name in enumerate(classes) for path in sorted((root / name).iterdir())
    ]


def _read_image(item: tuple[str, int]) -> dict:
    with open(item[0], "rb") as file:
        return {"x": file.read(), "y": item[1]}


def _read_lines(path: str):  # noqa: ANN202  (a generator LitData calls per input)
    with open(path, "rb") as file:
        for line in file:
            record = json.loads(line)
            yield {"id": record["id"], "text": record["text"], "url": record["url"]}


def run_impl(impl: str, case: str, source: Path, out: Path) -> dict:
    """Convert ``source`` into ``out`` with one implementation; return the seconds and sample count."""
    files = sorted(str(p) for p in source.iterdir()) if case == "jsonl" else []
    if impl.startswith("shardflow"):
        from shardflow.convert import Options, imagefolder_to_mds, jsonl_to_mds

        options = Options(out=str(out), workers=2, size_limit=SIZE_LIMIT, progress=False)
        check = {"shardflow": "quick", "shardflow --no-verify": "none", "shardflow --verify": "full"}[impl]
        started = time.perf_counter()
        if case == "images":
            summary = imagefolder_to_mds(str(source), options, check=check)
        else:
            summary = jsonl_to_mds(files, options)
        return {"seconds": time.perf_counter() - started, "samples": summary.samples}
    if impl == "mosaicml-streaming":
        from streaming import MDSWriter

        started = time.perf_counter()
        count = 0
        if case == "images":
            with MDSWriter(out=str(out), columns={"x": "bytes", "y": "int"}, size_limit=SIZE_LIMIT) as writer:
                for item in _image_items(source):
                    writer.write(_read_image(item))
                    count += 1
        else:
            columns = {"id": "int64", "text": "str", "url": "str"}
            with MDSWriter(out=str(out), columns=columns, size_limit=SIZE_LIMIT) as writer:
                for path in files:
                    for sample in _read_lines(path):
                        writer.write(sample)
                        count += 1
        return {"seconds": time.perf_counter() - started, "samples": count}
    from litdata import optimize

    started = time.perf_counter()
    items = _image_items(source) if case == "images" else files
    optimize(
        fn=_read_image if case == "images" else _read_lines,
        inputs=items,
        output_dir=str(out),
        num_workers=2,
        chunk_bytes=SIZE_LIMIT,
        verbose=False,
    )
    if case == "images":
        count = len(items)
    else:
        count = sum(chunk["chunk_size"] for chunk in json.loads((out / "index.json").read_text())["chunks"])
    return {"seconds": time.perf_counter() - started, "samples": count}


def measure(python: str, impl: str, case: str, source: Path, repeat: int) -> dict:
    """The fastest of ``repeat`` fresh runs of one implementation."""
    runs = []
    for _ in range(repeat):
        folder = Path(tempfile.mkdtemp(prefix=f"convert-bench-{impl}-"))
        try:
            result = subprocess.run(
                [
                    python,
                    __file__,
                    "--impl",
                    impl,
                    "--case",
                    case,
                    "--source",
                    str(source),
                    "--out",
                    str(folder / "out"),
                ],
                capture_output=True,
                text=True,
                cwd=folder,
            )
            if result.returncode != 0:
                sys.exit(f"{impl} failed on {case}:\n{result.stderr[-3000:]}")
            runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return min(runs, key=lambda run: run["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the issue's input sizes")
    parser.add_argument("--repeat", type=int, default=1, help="fresh runs per case; the fastest counts")
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.impl:
        print(json.dumps(run_impl(args.impl, args.case, args.source, args.out)))
        return

    sys.path.insert(0, str(Path(__file__).parent))
    from _reference import reference_python

    reference = reference_python()
    if reference is None:
        sys.exit("the reference venv could not be built: run bash ../shared/reference/setup.sh")
    impls = [("shardflow", sys.executable), ("mosaicml-streaming", reference), ("litdata", reference)]
    with tempfile.TemporaryDirectory(prefix="convert-bench-input-") as temp:
        images, lines = max(100, int(IMAGES * args.scale)), max(1000, int(LINES * args.scale))
        cases = {"images": (Path(temp, "images"), images), "jsonl": (Path(temp, "jsonl"), lines)}
        make_images(cases["images"][0], images)
        make_lines(cases["jsonl"][0], lines)
        print(
            f"cpus: {os.cpu_count()}; shardflow and LitData with 2 workers, mosaicml-streaming in one process"
        )
        print("| input | impl | samples | seconds | samples/s | its time / shardflow's |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        for case, (source, count) in cases.items():
            runs = (
                impls
                if case == "jsonl"
                else [
                    impls[0],
                    ("shardflow --no-verify", sys.executable),
                    ("shardflow --verify", sys.executable),
                    *impls[1:],
                ]
            )
            results = [(name, measure(python, name, case, source, args.repeat)) for name, python in runs]
            ours = results[0][1]["seconds"]
            label = f"{count:,} JPEGs (imagefolder)" if case == "images" else f"{count:,} JSONL lines"
            for name, run in results:
                if run["samples"] != count:
                    sys.exit(f"{name} wrote {run['samples']} samples of {case}, expected {count}")
                speed = "-" if name == "shardflow" else f"{run['seconds'] / ours:.2f}x"
                print(
                    f"| {label} | {name} | {run['samples']:,} | {run['seconds']:.2f} "
                    f"| {run['samples'] / run['seconds']:,.0f} | {speed} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
