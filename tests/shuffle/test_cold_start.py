"""Cold start: a process with an empty numba cache compiles only the kernels its epoch needs.

The first epoch of a fresh machine pays numba's compile time for every kernel it calls (see the shuffle
README's "Cold start"). This counts the kernels a default (exact ``py1e``) shuffled epoch of 1M samples
compiles, from the cache index files numba writes, one per compiled function; timings are in
``benchmarks/RESULTS.md``, not asserted here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = """
import numpy as np
from shardflow.shuffle import SampleOrder, WorldShape

order = SampleOrder(np.full(1000, 1000), num_canonical_nodes=1, batch_size=32, shuffle=True)
ids = order.worker_sample_ids(0, WorldShape(1, 1, 1), 0, 0, 0)
assert np.array_equal(np.sort(ids), np.arange(1_000_000)), "not a permutation of the epoch"
"""

# The kernels a default shuffled epoch may need: py1e's exact draws and sort, the partition, the import
# warm-up; none of the fast algorithms' kernels (``_kernels``), about 4 s of compiling (was 29 kernels).
_NEEDED = {
    "_exact._divide",
    "_exact._span_key",
    "_exact._whole",
    "_pcg64._add128",
    "_pcg64._mul128",
    "_pcg64.bounded",
    "_pcg64.load",
    "_pcg64.next32",
    "_pcg64.next64",
    "_pcg64.next_double",
    "_pcg64.random_interval",
    "_pcg64.shuffle_in",
    "_pcg64.skip_shuffle_in",
    "_pcg64.store",
    "_exact._fill_spans",
    "_exact._node_bounds",
    "_exact._py1e_node",
    "_exact._skip_doubles",
    "_exact._sort_by_key",
    "_exact._spans",
    "_exact._unit_ids",
    "_jit._ready",
    "_pcg64.advance",
    "partition._fill_batch",
    "partition._fill_worker",
    "partition._mark_rows",
    "partition._rank_value",
    "partition._row_value",
    "partition._value",
}


def test_cold_epoch_compiles_only_its_kernels(tmp_path: Path) -> None:
    cache = tmp_path / "numba"
    cache.mkdir()
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    subprocess.run([sys.executable, "-c", _SCRIPT], env=env, check=True, timeout=300)
    # numba names each index ``<module>.<function>-<line>.py<version>.nbi``.
    compiled = {path.name.rsplit("-", 1)[0] for path in cache.rglob("*.nbi")}
    assert compiled <= _NEEDED, f"compiled beyond the epoch's needs: {sorted(compiled - _NEEDED)}"
    assert "_exact._py1e_node" in compiled, f"the epoch did not run py1e's kernel: {sorted(compiled)}"


def test_warm_compiles_what_a_default_epoch_needs(tmp_path: Path) -> None:
    """``python -m shardflow.shuffle.warm`` fills the cache: the 1M-sample epoch then compiles nothing."""
    cache = tmp_path / "numba"
    cache.mkdir()
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    subprocess.run([sys.executable, "-m", "shardflow.shuffle.warm"], env=env, check=True, timeout=300)
    warmed = {path.name: path.stat().st_mtime_ns for path in cache.rglob("*.nbi")}
    assert warmed, "warm compiled nothing"
    subprocess.run([sys.executable, "-c", _SCRIPT], env=env, check=True, timeout=300)
    after = {path.name: path.stat().st_mtime_ns for path in cache.rglob("*.nbi")}
    assert after == warmed, f"the epoch compiled beyond the warm-up: {sorted(set(after) - set(warmed))}"
