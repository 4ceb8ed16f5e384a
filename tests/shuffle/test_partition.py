"""Partition: the reference's layout, elastic determinism, exact resumption, equal work per device, errors."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _shuffle_order import stream_order

from shardflow.shuffle import ShuffleError, get_partition_slice, get_partitions


def test_slices_equal_the_epoch_array() -> None:
    for algo, args in (("orig", (1003, 4, 2, 3, 2, 5, 17, None)), ("relaxed", (1003, 4, 3, 2, 2, 4, 12, 2))):
        epoch = get_partitions(algo, *args)
        nodes, ranks, workers = epoch.shape[:3]
        for node, rank, worker in itertools.product(range(nodes), range(ranks), range(workers)):
            alone = get_partition_slice(algo, *args[:6], node, rank, worker, *args[6:])
            assert np.array_equal(alone, epoch[node, rank, worker].ravel())


@pytest.mark.parametrize("num_samples", [960, 1001])
def test_every_device_gets_the_same_number_of_samples(num_samples: int) -> None:
    for nodes, ranks, workers, batch in ((2, 3, 2, 4), (4, 1, 3, 5), (1, 8, 1, 7)):
        epoch = get_partitions("orig", num_samples, 4, nodes, ranks, workers, batch)
        real = (epoch >= 0).sum(axis=(2, 3, 4))
        assert (real == real.flat[0]).all()
        assert real.sum() >= num_samples
        assert set(np.unique(epoch[epoch >= 0])) == set(range(num_samples)), "a sample went missing"


def test_evenly_divisible_epochs_use_every_sample_once() -> None:
    epoch = get_partitions("orig", 4096, 8, 4, 4, 2, 8)
    assert np.array_equal(np.sort(epoch.ravel()), np.arange(4096))


@pytest.mark.parametrize("algo", ["orig", "relaxed"])
def test_drop_first_gives_exactly_the_tail(algo: str) -> None:
    """Not rounded to the node count as in the reference: any resume point continues the same stream."""
    full = stream_order(get_partitions(algo, 100, 2, 2, 1, 1, 5), 5, 2, 5)
    for drop in (1, 7, 10, 33, 99):
        tail = stream_order(get_partitions(algo, 100, 2, 2, 1, 1, 5, drop_first=drop), 5, 2, 5)
        assert np.array_equal(tail[: 100 - drop], full[drop:100]), drop
    assert get_partitions(algo, 100, 2, 2, 1, 1, 5, drop_first=100).shape[3] == 0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (
            ("orig", 100, 3, 2, 1, 1, 4),
            "num_canonical_nodes=3 and num_physical_nodes=2: one must divide the other",
        ),
        (("relaxed", 100, 3, 2, 1, 1, 4), "num_canonical_nodes=3 and num_physical_nodes=2"),
        (
            ("relaxed", 100, 4, 3, 2, 1, 5, 0, 2),
            "global batch of 30 samples .* does not split over the 4 devices",
        ),
        (("orig", 100, 2, 2, 1, 1, 4, 103), r"drop_first \(sample_in_epoch\) = 103 is outside the epoch"),
        (("orig", 100, 2, 2, 1, 1, 4, -1), r"drop_first \(sample_in_epoch\) = -1"),
        (("orig", 0, 2, 2, 1, 1, 4), "num_samples=0: an epoch needs at least one sample"),
        (("orig", 100, 2, 0, 1, 1, 4), "num_physical_nodes must be a positive integer, got 0"),
        (("orig", 100, 2, 2, 0, 1, 4), "ranks_per_node must be a positive integer, got 0"),
        (("orig", 100, 2, 2, 1, 0, 4), "workers_per_rank must be a positive integer, got 0"),
        (("orig", 100, 2, 2, 1, 1, 0), "batch_size must be a positive integer, got 0"),
        (("stripes", 100, 2, 2, 1, 1, 4), "partition_algo='stripes' is unknown"),
    ],
)
def test_impossible_shapes_say_which_number_is_wrong(args: tuple, match: str) -> None:
    with pytest.raises(ShuffleError, match=match):
        get_partitions(*args)


def test_worker_outside_the_world_is_refused() -> None:
    with pytest.raises(ShuffleError, match=r"rank_of_node=4 is outside the world: ranks_per_node is 4"):
        get_partition_slice("orig", 100, 2, 2, 4, 1, 4, 0, 4, 0)


def test_identical_to_mosaicml_streaming(tmp_path: Path, reference_python: Path) -> None:
    """Same 5-D arrays as the reference's get_partitions, for drop_first a multiple of the node counts."""
    python = str(reference_python)
    rng = np.random.default_rng(4)
    cases = []
    while len(cases) < 150:
        canonical = int(rng.choice([1, 2, 3, 4, 6, 8, 15]))
        nodes = int(rng.integers(1, 17))
        ranks, workers, batch = (int(v) for v in rng.integers(1, [9, 5, 10]))
        samples = int(rng.integers(1, 2500))
        initial = None
        if (canonical % nodes and nodes % canonical) or rng.random() < 0.3:
            initial = int(rng.choice([d for d in range(1, 16) if canonical % d == 0 or d % canonical == 0]))
            if (nodes * ranks * batch) % (initial * ranks):
                continue
        step = int(np.lcm(initial, nodes)) if initial else nodes  # the reference rounds drop_first down
        drop = int(rng.integers(0, samples + 1)) // step * step
        cases.append(
            [
                "relaxed" if initial else str(rng.choice(["orig", "relaxed"])),
                samples,
                canonical,
                nodes,
                ranks,
                workers,
                batch,
                drop,
                initial,
            ]
        )
    script = textwrap.dedent("""
        import json, sys, warnings, logging
        import numpy as np
        warnings.simplefilter("ignore"); logging.disable(logging.WARNING)
        from streaming.base.partition import get_partitions
        arrays = {str(i): get_partitions(*case) for i, case in enumerate(json.load(open(sys.argv[1])))}
        np.savez(sys.argv[2], **arrays)
    """)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "ref.py").write_text(script)
    subprocess.run(
        [python, str(tmp_path / "ref.py"), str(tmp_path / "cases.json"), str(tmp_path / "ref.npz")],
        check=True,
        capture_output=True,
        text=True,
    )
    reference = np.load(tmp_path / "ref.npz")
    for i, case in enumerate(cases):
        ours = get_partitions(*case)
        assert ours.shape == reference[str(i)].shape and np.array_equal(ours, reference[str(i)]), case
    assert sys.executable  # the comparison ran in this interpreter, the reference in its own venv


def test_fewer_samples_than_canonical_nodes_is_a_user_warning() -> None:
    """As in the reference: most samples are repeated, and warnings.warn says so."""
    with pytest.warns(UserWarning, match="3 samples over 8 canonical nodes"):
        get_partitions("orig", 3, 8, 1, 1, 1, 1)
