"""Fixtures for the format tests: the reference datasets, writable copies of them and their values."""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import shutil
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import pytest


@pytest.fixture(scope="session")
def values(fixtures_dir: Path) -> ModuleType:
    """The fixtures' ``values.py``: every reference sample as a pure function of its index."""
    spec = importlib.util.spec_from_file_location("shardflow_fixture_values", fixtures_dir / "values.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def copy_fixture(fixtures_dir: Path, tmp_path: Path) -> Callable[[str], Path]:
    """Copy a fixture dataset (e.g. ``'mds/tiny'``) into ``tmp_path`` with writable files and folders."""

    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(fixtures_dir / name, target, copy_function=shutil.copyfile)
        for folder, _, _ in os.walk(target):
            os.chmod(folder, 0o755)
        return target

    return copy


class Cell(NamedTuple):
    """Where one column of one sample is stored in an MDS shard."""

    path: Path
    offset: int
    data: bytes


@pytest.fixture(scope="session")
def mds_cells() -> Callable[[Path, int], dict[str, Cell]]:
    """Locate every column of sample ``i`` of an MDS dataset folder, parsing the shard without a reader."""

    def cells(folder: Path, i: int) -> dict[str, Cell]:
        for shard in json.loads((folder / "index.json").read_text())["shards"]:
            if i < shard["samples"]:
                break
            i -= shard["samples"]
        path = folder / shard["raw_data"]["basename"]
        data = path.read_bytes()
        begin, end = struct.unpack_from("<2I", data, 4 + 4 * i)
        sizes = shard["column_sizes"]
        var = iter(struct.unpack_from(f"<{sizes.count(None)}I", data, begin))
        pos = begin + 4 * sizes.count(None)
        found = {}
        for name, size in zip(shard["column_names"], sizes, strict=True):
            size = size if size is not None else next(var)
            found[name] = Cell(path, pos, data[pos : pos + size])
            pos += size
        assert pos == end
        return found

    return cells


@pytest.fixture
def capped_memory() -> Iterator[None]:
    """Cap the address space 1 GiB above its current size while the test runs (Linux).

    Damaged data that makes a decoder allocate without bound then raises MemoryError in the test
    instead of exhausting the shared machine.
    """
    if not os.path.exists("/proc/self/statm"):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * resource.getpagesize()
    cap = used + (1 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
