"""cifar10: the python-pickle batches of CIFAR-10 into MDS ``{x: ndarray:uint8:32,32,3, y: int}``.

The input is the extracted ``cifar-10-batches-py`` folder: ``data_batch_1`` .. ``data_batch_5`` (train),
``test_batch`` (test) and ``batches.meta``. Both splits are converted, into the ``train/`` and ``test/``
sub-folders of ``--out`` (as mosaicml-streaming's converter does); ``--split`` converts one of them
(still into its sub-folder). Each batch is a pickled dict with ``b"data"`` (N x 3072 uint8:
the red, green then blue planes of each 32 x 32 image, rows first) and ``b"labels"`` (N ints). ``x`` is
each image as a height x width x channel array; the class names of ``batches.meta`` go to
``classes.json``. The pickles are read with an unpickler that builds only numpy arrays and plain values.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shardflow.convert import _cli
from shardflow.convert._plan import Segment, Unit
from shardflow.convert._run import Options, Plan, SplitConverter, Summary, convert_each, split_converters
from shardflow.convert.errors import InputError

__all__ = ["CIFAR10", "cifar10_to_mds", "main", "SPLITS"]

SPLITS = {"train": [f"data_batch_{k}" for k in range(1, 6)], "test": ["test_batch"]}
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _Unpickler(pickle.Unpickler):
    """Builds numpy arrays and plain values only: a batch file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch")


def load_batch(path: str) -> tuple[np.ndarray, list[int]]:
    """The ``(N, 32, 32, 3)`` images and the labels of one batch file.

    Raises:
        InputError: The file is missing or is not a CIFAR-10 batch; the message says what is wrong.
    """
    try:
        with open(path, "rb") as file:
            batch = _Unpickler(file, encoding="bytes").load()
    except FileNotFoundError:
        raise InputError(
            f"cifar10: {path} is missing: give the extracted cifar-10-batches-py folder"
        ) from None
    except Exception as err:  # Any unpickling failure means the file is not a batch.
        raise InputError(
            f"cifar10: {path} is not a CIFAR-10 batch pickle ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise InputError(f"cifar10: {path} is not a batch dict with b'data' and b'labels' (found {keys})")
    data, labels = batch[b"data"], list(batch[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise InputError(f"cifar10: {path}: b'data' must be an N x 3072 uint8 array, found {_describe(data)}")
    if len(labels) != len(data):
        raise InputError(f"cifar10: {path}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), [int(label) for label in labels]


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


@dataclass
class CIFAR10(SplitConverter):
    """Converts one split (``train`` or ``test``) of the CIFAR-10 folder ``root``."""

    name = "cifar10"
    splits = tuple(SPLITS)

    def plan(self) -> Plan:
        self.check_split()
        if not os.path.isdir(self.root):
            raise InputError(f"cifar10: {self.root} is not a folder: give the extracted cifar-10-batches-py")
        units = []
        for name in SPLITS[self.split]:
            path = os.path.join(self.root, name)
            _, labels = load_batch(path)
            units.append(Unit(path, len(labels), True))
        files: dict[str, Any] = {}
        meta = os.path.join(self.root, "batches.meta")
        inputs = []
        if os.path.exists(meta):
            files["classes.json"] = {"classes": _class_names(meta)}
            inputs.append(meta)
        total = sum(unit.size for unit in units)
        return Plan(units, {"x": "ndarray:uint8:32,32,3", "y": "int"}, files, total, inputs)

    def samples(
        self, segment: Segment, columns: dict[str, str], skipped: list[str]
    ) -> Iterator[dict[str, Any]]:
        images, labels = load_batch(segment.unit.name)
        images = np.ascontiguousarray(images[segment.start : segment.stop])
        for image, label in zip(images, labels[segment.start : segment.stop], strict=True):
            yield {"x": image, "y": label}

    def where(self, segment: Segment, produced: int) -> str:
        return f"{segment.unit.name} (image {segment.start + produced})"

    def tally(self, segment: Segment, produced: int) -> tuple[str, dict[str, int]]:
        return segment.unit.name, {"images": segment.stop - segment.start}


def _class_names(path: str) -> list[str]:
    try:
        with open(path, "rb") as file:
            meta = _Unpickler(file, encoding="bytes").load()
        names = meta[b"label_names"]
        return [name.decode() if isinstance(name, bytes) else str(name) for name in names]
    except Exception as err:
        raise InputError(
            f"cifar10: {path} has no readable b'label_names' ({type(err).__name__}: {err})"
        ) from None


def cifar10_to_mds(root: str, options: Options, *, split: str | None = None) -> dict[str, Summary]:
    """Convert the extracted CIFAR-10 folder ``root`` into MDS datasets ``<options.out>/train`` and
    ``<options.out>/test``, or only ``<options.out>/<split>``; returns each split's summary."""
    return convert_each(split_converters(CIFAR10, root, split), options)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``python -m shardflow.convert.cifar10 ROOT --out OUT [--split train]``."""
    return _cli.split_main(CIFAR10, __doc__ or "", "the extracted cifar-10-batches-py folder", argv)


if __name__ == "__main__":
    raise SystemExit(main())
