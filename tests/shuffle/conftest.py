"""Fixtures of the shuffle tests; ``_shuffle_order`` (beside this file) rebuilds global orders."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the _shuffle_* helper modules beside this file


@pytest.fixture(scope="session")
def sizes() -> np.ndarray:
    """Shard sizes of a small, irregular dataset (100 shards of 1 to 100 samples)."""
    return 1 + np.arange(100, dtype=np.int64)
