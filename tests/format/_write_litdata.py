"""Writes LitData folders with ``litdata.optimize`` and what LitData reads back from them (run by the
tests in a python that has litdata: the reference venv).

``python _write_litdata.py OUT [SAMPLES [VARIANT ...]]`` writes ``OUT/<variant>/`` for each of
:data:`VARIANTS` (or those named) and
``OUT/<variant>.pkl``: the samples as LitData's own ``StreamingDataset`` reads them (from a copy: LitData
inflates whole-file compressed chunks in place and deletes them), memoryviews made bytes.
"""

from __future__ import annotations

import pickle
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

# name: keyword arguments of litdata.optimize
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "zstd_batch": {"compression": "zstd"},  # litdata 0.2.76's default level for zstd
    "zstd_chunk": {"compression": "zstd", "compression_level": "chunk"},
    "zstd_sample": {"compression": "zstd", "compression_level": "sample"},
}


def sample(i: int) -> dict[str, Any]:
    """Sample ``i``: every leaf kind the shardflow reader decodes, and nested pytrees."""
    import numpy as np
    import torch

    return {
        "id": i,
        "text": f"sample {i} " + "é" * (i % 3),
        "blob": bytes([i % 256]) * (i % 7 + 1),
        "vec": np.arange(i % 5, dtype=np.float32),
        "mat": np.full((2, i % 3 + 1), i, np.int16),
        "tensor": torch.arange(6, dtype=torch.int64).reshape(2, 3) + i,
        "score": i / 3,
        "flag": i % 2 == 0,
        "meta": {"tags": [f"t{i}", "x"], "pair": (1.5, i), "rows": [{"a": i, "b": "y"}], "mixed": [i, "z"]},
    }


def plain(value: Any) -> Any:
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, dict):
        return type(value)((key, plain(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    return value


def main() -> None:
    from litdata import StreamingDataset, optimize

    out = Path(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    names = sys.argv[3:] or list(VARIANTS)
    for name in names:
        options = VARIANTS[name]
        folder = out / name
        optimize(fn=sample, inputs=list(range(count)), output_dir=str(folder), chunk_bytes="3KB",
                 num_workers=1, **options)  # fmt: skip
        scratch = Path(tempfile.mkdtemp(prefix="litdata-read-"))
        try:
            copy = scratch / "copy"
            shutil.copytree(folder, copy)
            dataset = StreamingDataset(str(copy))
            with open(out / f"{name}.pkl", "wb") as file:
                pickle.dump([plain(dataset[i]) for i in range(len(dataset))], file)
        finally:
            shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
