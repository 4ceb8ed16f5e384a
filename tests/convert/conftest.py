"""Helpers of the converter tests: run a converter's CLI, read a dataset back."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shardflow.format import LocalDataset


def read_all(out: Path) -> list[dict[str, Any]]:
    """Every sample of the dataset at ``out``, in order."""
    dataset = LocalDataset(str(out))
    return [dataset[i] for i in range(len(dataset))]


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m shardflow.convert.<name> *args`` in a subprocess; returns the completed process."""

    def run(name: str, *args: Any) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", f"shardflow.convert.{name}", *map(str, args)]
        return subprocess.run(command, capture_output=True, text=True, timeout=300)

    return run


@pytest.fixture
def reader() -> Callable[[Path], list[dict[str, Any]]]:
    """``read_all`` as a fixture (tests import nothing from conftest)."""
    return read_all
