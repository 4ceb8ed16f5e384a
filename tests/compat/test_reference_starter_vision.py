"""COCO, ADE20K and LAION-400M datasets cross over between the libraries, both ways.

mosaicml-streaming 0.13 runs in its own venv (see conftest.py): its ``StreamingCOCO`` /
``StreamingADE20K`` (``StreamingDataset`` for LAION, which has no typed class) read what
``shardflow.convert.<name>`` wrote, and its converters' code writes the same small input, which shardflow's
typed datasets read. Its converters' ``main`` insists on the full datasets' sample counts, so the script
runs their sample code (``each`` / ``get`` / ``convert``) with the columns taken from their ``main``.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shardflow.convert import Options, ade20k, coco, laion
from shardflow.dataset import StreamingDataset
from shardflow.dataset.vision import StreamingADE20K, StreamingCOCO

HELPERS = Path(__file__).resolve().parents[1] / "convert"
sys.path.insert(0, str(HELPERS))
from _vision_inputs import (  # noqa: E402
    ade20k_item,
    coco_item,
    comparable,
    make_ade20k,
    make_coco,
    make_img2dataset,
    same_laion,
)

_REFERENCE = r"""
import ast, json, os, pickle, sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[1])
from _vision_inputs import comparable
from streaming import MDSWriter, StreamingDataset


def columns_of(module):
    # The `columns = {...}` literal of the converter's source: the columns its main() writes.
    import inspect
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "columns":
            return ast.literal_eval(node.value)
    raise AssertionError(f"no columns in {module.__name__}")


def write(out, columns, samples):
    with MDSWriter(out=out, columns=columns, size_limit=1 << 12) as writer:
        for sample in samples:
            writer.write(sample)


def coco(source, ours, theirs):
    from streaming.vision import StreamingCOCO
    from streaming.vision.convert import coco as convert
    dataset = StreamingCOCO(local=ours, batch_size=1)
    read = [comparable(dataset[i]) for i in range(dataset.num_samples)]
    detection = convert._COCODetection(os.path.join(source, "val2017"),
                                       os.path.join(source, "annotations", "instances_val2017.json"))
    write(theirs, columns_of(convert), convert.each(detection, shuffle=False))
    return read


def ade20k(source, ours, theirs):
    from streaming.vision import StreamingADE20K
    from streaming.vision.convert import ade20k as convert
    dataset = StreamingADE20K(local=ours, batch_size=1)
    read = [comparable(dataset[i]) for i in range(dataset.num_samples)]
    write(theirs, columns_of(convert), convert.each(convert.get(source, "train", shuffle=False)))
    return read


def laion(source, ours, theirs):
    dataset = StreamingDataset(local=ours, batch_size=1)
    read = [{k: comparable(v) for k, v in dataset[i].items()} for i in range(dataset.num_samples)]
    try:
        import pandas  # noqa: F401  (the converter needs it, and pyarrow)
        from streaming.multimodal.convert.laion.laion400m import convert_and_upload as convert
    except ImportError as err:
        return read, f"the reference venv cannot run its LAION converter ({err})"
    for name in sorted(os.listdir(source)):
        if name.endswith(".parquet"):
            convert.convert(os.path.join(source, name), os.path.join(theirs, name[:-8]), [])
    return read, None


results = {kind: globals()[kind](*paths) for kind, paths in json.loads(sys.argv[2]).items()}
with open(sys.argv[3], "wb") as file:
    pickle.dump(results, file)
"""

KINDS = ("coco", "ade20k", "laion")

# The reference's LAION converter needs pandas (< 3: pandas 3 breaks it on null strings) and pyarrow, which
# ../shared/reference/setup.sh does not install: they go into a folder of their own beside the reference's
# venv, on its PYTHONPATH for this run only (the venv itself is left as the script made it).
_LAION_EXTRAS = ("pyarrow>=14", "pandas>=2,<3")


def _laion_extras(python: Path) -> Path:
    folder = python.parent.parent / "shardflow-laion-extras"
    if not (folder / ".complete").exists():
        logging.getLogger(__name__).warning(
            "fetching %s for the reference's LAION converter into %s (once)", ", ".join(_LAION_EXTRAS), folder
        )
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--target", str(folder), *_LAION_EXTRAS],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, (
            f"could not install {_LAION_EXTRAS} beside the reference: {done.stderr[-2000:]}"
        )
        (folder / ".complete").touch()
    return folder


@pytest.fixture(scope="module")
def crossed(reference_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each dataset's input, shardflow's conversion, and one reference run over all three: the expected
    samples, what the reference read of shardflow's conversion, and the reference's conversion's path."""
    root = tmp_path_factory.mktemp("starter")
    options = {"workers": 2, "partitions": 3, "size_limit": "3kb"}
    expected = {
        "coco": [coco_item(s) for s in make_coco(root / "coco", {"val": 14})["val"]],
        "ade20k": [ade20k_item(s) for s in make_ade20k(root / "ade20k", {"train": 12})["train"]],
        "laion": make_img2dataset(root / "laion", shards=2, per_shard=10, output_format="parquet"),
    }
    coco.coco_to_mds(str(root / "coco"), Options(str(root / "ours-coco"), **options), split="val")
    ade20k.ade20k_to_mds(str(root / "ade20k"), Options(str(root / "ours-ade20k"), **options), split="train")
    laion.laion_to_mds([str(root / "laion")], Options(str(root / "ours-laion"), **options))
    ours = {"coco": "ours-coco/val", "ade20k": "ours-ade20k/train", "laion": "ours-laion"}
    paths = {kind: [str(root / kind), str(root / ours[kind]), str(root / f"theirs-{kind}")] for kind in KINDS}
    command = [
        str(reference_python),
        "-c",
        _REFERENCE,
        str(HELPERS),
        json.dumps(paths),
        str(root / "read.pkl"),
    ]
    env = {**os.environ, "PYTHONPATH": str(_laion_extras(reference_python))}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    with (root / "read.pkl").open("rb") as file:
        read = pickle.load(file)
    return {"expected": expected, "read": read, "theirs": {kind: root / f"theirs-{kind}" for kind in KINDS}}


@pytest.mark.parametrize("kind, typed", [("coco", StreamingCOCO), ("ade20k", StreamingADE20K)])
def test_vision_both_ways(crossed: dict[str, Any], kind: str, typed: type) -> None:
    expected = crossed["expected"][kind]
    assert crossed["read"][kind] == expected  # the reference's typed dataset over shardflow's conversion
    theirs = typed(local=str(crossed["theirs"][kind]))  # shardflow's over the reference's conversion
    assert [comparable(theirs[i]) for i in range(len(theirs))] == expected


def _same(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for k, (sample, want) in enumerate(zip(got, expected, strict=True)):
        assert same_laion(sample, want), (k, sample, want)


def test_laion_both_ways(crossed: dict[str, Any]) -> None:
    expected = crossed["expected"]["laion"]
    read, reason = crossed["read"]["laion"]
    _same(read, expected)  # the reference's StreamingDataset over shardflow's conversion
    assert reason is None, reason
    theirs = []
    for part in sorted(crossed["theirs"]["laion"].iterdir()):  # a dataset per Parquet file, as it writes
        dataset = StreamingDataset(local=str(part))
        theirs += [dataset[i] for i in range(len(dataset))]
    _same(theirs, expected)
