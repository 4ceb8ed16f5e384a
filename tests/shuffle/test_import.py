"""shardflow.shuffle loads numpy and numba only: no torch, no sibling package (DESIGN.md §3)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "packages" / "shuffle"


def test_import_loads_no_torch_and_no_sibling_package() -> None:
    code = (
        "import json, sys, shardflow.shuffle; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or "
        "m.startswith(('shardflow.format', 'shardflow.storage', 'shardflow.dataset', 'shardflow.convert', "
        "'boto3'))) + [str('numba' in sys.modules)]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == ["True"], f"importing shardflow.shuffle loaded {loaded[:-1]}"


def test_no_namespace_init_file_and_typed() -> None:
    assert not (PACKAGE / "src" / "shardflow" / "__init__.py").exists(), "it would hide every sibling package"
    assert (PACKAGE / "src" / "shardflow" / "shuffle" / "py.typed").is_file()


def test_public_names_are_exported() -> None:
    import shardflow.shuffle as shuffle

    for name in shuffle.__all__:
        assert getattr(shuffle, name) is not None
