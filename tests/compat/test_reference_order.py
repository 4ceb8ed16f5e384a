"""The sample order is mosaicml-streaming 0.13's, value for value (its venv runs in a subprocess).

200 random settings (shard sizes, streams and their weights, ``epoch_size``, canonical nodes, world
shapes, batch sizes, shuffle algorithms, seeds, epochs, block sizes, partition and sampling methods,
resume points) are ordered by both libraries at the level the dataset composes: the whole epoch of
``random`` batching (the reference's ``generate_work``: ``resample_streams``, ``get_partitions``,
``get_shuffle``) against ``SampleOrder.epoch_sample_ids`` and each worker's ``worker_sample_ids``, and
60 more of the ``stratified``, ``per_stream`` and ``device_per_stream`` batching methods; plus
``get_shuffle``, ``get_sampling`` and the stream weights (``Stream.apply_weights``) alone. The reference
runs every case of a kind in one process.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from shardflow.shuffle import (
    SampleOrder,
    ShuffleError,
    WorldShape,
    get_sampling,
    get_shuffle,
    resolve_stream_weights,
)

ALGOS = ("py1e", "py1br", "py1s", "py2s", "naive")
BATCHING = ("stratified", "per_stream", "device_per_stream")

_REFERENCE = r"""
import json, logging, sys, types, warnings
import numpy as np
warnings.simplefilter("ignore")
logging.disable(logging.WARNING)
from streaming.base.batching import batching_methods
from streaming.base.dataset import StreamingDataset
from streaming.base.sampling import get_sampling
from streaming.base.shuffle import get_shuffle
from streaming.base.stream import Stream
from streaming.base.world import World

def weights(case):
    streams = []
    for p, r, c in zip(case["proportion"], case["repeat"], case["choose"]):
        streams.append(Stream(local="/nonexistent", proportion=p, repeat=r, choose=c))
    samples = np.add.reduceat(np.array(case["sizes"], np.int64), np.cumsum([0] + case["streams"][:-1]))
    size = Stream.apply_weights(streams, samples, case["epoch_size"], case["seed"])
    return streams, size

def epoch(case):
    sizes = np.array(case["sizes"], np.int64)
    streams, size = weights(case)
    per_stream = np.array(case["streams"], np.int64)
    dataset = types.SimpleNamespace(
        shuffle_seed=case["seed"], sampling_method=case["sampling"],
        sampling_granularity=case["granularity"],
        epoch_seed_change=case["algo"] is not None and case["sampling"] == "balanced",
        num_streams=len(streams), shard_offset_per_stream=np.cumsum(per_stream) - per_stream,
        shards_per_stream=per_stream, samples_per_shard=sizes,
        sample_offset_per_shard=np.cumsum(sizes) - sizes, streams=streams,
        num_canonical_nodes=case["canonical"], batch_size=case["batch"],
        partition_algo=case["partition"], epoch_size=size,
        initial_physical_nodes=case["initial"], shuffle=case["algo"] is not None,
        shuffle_algo=case["algo"], shuffle_block_size=case["block"])
    dataset.resample_streams = types.MethodType(StreamingDataset.resample_streams, dataset)
    world = World(*case["world"], 0)
    method = batching_methods[case.get("batching", "random")]
    try:
        return method(dataset, world, case["epoch"], case["sample_in_epoch"])
    except ValueError:  # a refusal (e.g. a stream too small for its part of a batch)
        return np.array([], np.int64)

kind, path = sys.argv[1], sys.argv[2]
cases = json.load(open(path))
out = {}
for i, case in enumerate(cases):
    if kind in ("epoch", "batching"):
        out[str(i)] = epoch(case)
    elif kind == "weights":
        streams, size = weights(case)
        out[str(i)] = np.array([int(s.choose) for s in streams] + [size], np.int64)
        out[f"p{i}"] = np.array([float(s.proportion) for s in streams])
    elif kind == "shuffle":
        out[str(i)] = get_shuffle(case["algo"], np.array(case["sizes"], np.int64), case["canonical"],
                                  case["seed"], case["epoch"], case["block"])
    else:
        out[str(i)] = get_sampling(np.array(case["sizes"], np.int64), case["choose"], case["granularity"],
                                   case["seed"], case["epoch"], case["use_epoch"])
np.savez(path + ".npz", **out)
"""


def _reference(python: Path, tmp_path: Path, kind: str, cases: list[dict]) -> np.lib.npyio.NpzFile:
    path = tmp_path / f"{kind}.json"
    path.write_text(json.dumps(cases))
    result = subprocess.run([str(python), "-c", _REFERENCE, kind, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return np.load(f"{path}.npz")


def _weights_case(rng: np.random.Generator, streams: int) -> dict:
    """Per-stream weights of one kind (or none), and maybe an epoch size."""
    kind = rng.choice(["none", "epoch_size", "proportion", "repeat", "choose", "mixed"])
    none = [None] * streams
    case = {"proportion": none, "repeat": none, "choose": none, "epoch_size": None}
    if kind == "proportion":
        case["proportion"] = rng.uniform(0.1, 3, streams).round(3).tolist()
        case["epoch_size"] = int(rng.integers(50, 3000)) if rng.random() < 0.6 else None
    elif kind == "epoch_size":
        case["epoch_size"] = int(rng.integers(50, 3000))
    elif kind == "repeat":
        case["repeat"] = rng.uniform(0.3, 2.5, streams).round(2).tolist()
    elif kind == "choose":
        case["choose"] = rng.integers(40, 1500, streams).tolist()
    elif kind == "mixed":
        case["repeat"] = [float(rng.uniform(0.3, 2.5)) if k % 2 else None for k in range(streams)]
        case["choose"] = [None if k % 2 else int(rng.integers(40, 900)) for k in range(streams)]
    return case


def _epoch_cases(count: int, batching: bool = False) -> list[dict]:
    """``count`` random settings; ``batching``: of the per-stream batching methods (a seed of their own)."""
    rng = np.random.default_rng(23 if batching else 20)
    cases = []
    while len(cases) < count:
        streams = int(rng.integers(1, 4))
        per_stream = rng.integers(1, 12, streams).tolist()
        sizes = rng.integers(1, int(rng.choice([20, 120, 400])), sum(per_stream)).tolist()
        nodes = int(rng.choice([1, 1, 2, 4]))
        canonical = nodes * int(rng.choice([1, 2, 3])) if rng.random() < 0.8 else max(1, nodes // 2)
        case = {
            "sizes": sizes,
            "streams": per_stream,
            "canonical": canonical,
            "world": [nodes, int(rng.integers(1, 4)), int(rng.integers(1, 4))],
            "batch": int(rng.integers(1, 9)),
            "algo": None if rng.random() < 0.1 else str(rng.choice(ALGOS)),
            "seed": int(rng.integers(0, 2**31)),
            "epoch": int(rng.integers(0, 6)),
            "block": int(rng.choice([2, 37, 200, 1 << 18])),
            "partition": str(rng.choice(["orig", "relaxed"])),
            "sampling": str(rng.choice(["balanced", "fixed"])),
            "granularity": int(rng.choice([1, 1, 3, 10])),
            "initial": None,
            **_weights_case(rng, streams),
        }
        if batching:
            case["batching"] = str(rng.choice(BATCHING))
        weights = resolve_stream_weights(
            np.add.reduceat(sizes, np.cumsum([0, *per_stream[:-1]])),
            case["proportion"],
            case["repeat"],
            case["choose"],
            case["epoch_size"],
            case["seed"],
        )
        if weights.epoch_size < canonical or weights.choose.min() < 1:
            continue
        global_batch = nodes * case["world"][1] * case["batch"]
        case["sample_in_epoch"] = (
            0
            if rng.random() < 0.6
            else int(rng.integers(0, weights.epoch_size // global_batch + 1)) * global_batch
        )
        if batching and rng.random() < 0.2:  # off a global batch boundary: both round it down
            case["sample_in_epoch"] += int(rng.integers(0, global_batch))
        cases.append(case)
    return cases


def _order(case: dict) -> SampleOrder:
    per_stream = case["streams"]
    weights = resolve_stream_weights(
        np.add.reduceat(case["sizes"], np.cumsum([0, *per_stream[:-1]])),
        case["proportion"],
        case["repeat"],
        case["choose"],
        case["epoch_size"],
        case["seed"],
    )
    return SampleOrder(
        case["sizes"],
        case["canonical"],
        case["batch"],
        shards_per_stream=per_stream,
        choose_per_stream=weights.choose.tolist(),
        shuffle=case["algo"] is not None,
        shuffle_algo=case["algo"] or "py1e",
        shuffle_seed=case["seed"],
        shuffle_block_size=case["block"],
        partition_algo=case["partition"],
        sampling_method=case["sampling"],
        sampling_granularity=case["granularity"],
        batching_method=case.get("batching", "random"),
        proportion_per_stream=weights.proportion.tolist(),
    )


def test_epochs_and_worker_slices_equal_the_reference(reference_python: Path, tmp_path: Path) -> None:
    cases = _epoch_cases(140)
    reference = _reference(reference_python, tmp_path, "epoch", cases)
    for i, case in enumerate(cases):
        order = _order(case)
        world = WorldShape(*case["world"])
        ours = order.epoch_sample_ids(case["epoch"], world, case["sample_in_epoch"])
        assert np.array_equal(ours, reference[str(i)]), f"case {i}: {case}"
        if i % 7 == 0:  # a worker computes its slice alone, from the same draws
            node, rank, worker = (n - 1 for n in case["world"])
            alone = order.worker_sample_ids(case["epoch"], world, node, rank, worker, case["sample_in_epoch"])
            assert np.array_equal(alone, ours[node, rank, worker].ravel()), f"case {i}: {case}"


def test_batching_methods_equal_the_reference(reference_python: Path, tmp_path: Path) -> None:
    """``stratified``, ``per_stream``, ``device_per_stream``: the same epochs, and the same refusals."""
    cases = _epoch_cases(60, batching=True)
    reference = _reference(reference_python, tmp_path, "batching", cases)
    refused = 0
    for i, case in enumerate(cases):
        order = _order(case)
        world = WorldShape(*case["world"])
        expected = reference[str(i)]
        if expected.ndim == 1:  # the reference raised ValueError
            refused += 1
            with pytest.raises(ShuffleError):
                order.epoch_sample_ids(case["epoch"], world, case["sample_in_epoch"])
            continue
        ours = order.epoch_sample_ids(case["epoch"], world, case["sample_in_epoch"])
        assert np.array_equal(ours, expected), f"case {i}: {case}"
        if i % 5 == 0:
            node, rank, worker = (n - 1 for n in case["world"])
            alone = order.worker_sample_ids(case["epoch"], world, node, rank, worker, case["sample_in_epoch"])
            assert np.array_equal(alone, ours[node, rank, worker].ravel()), f"case {i}: {case}"
    assert refused < len(cases) // 3, f"{refused} of {len(cases)} cases refused: the generator needs tuning"


def test_streams_smaller_than_the_canonical_nodes_as_the_reference(
    reference_python: Path, tmp_path: Path
) -> None:
    """A stream with fewer samples than canonical nodes, ordered alone (per-stream batching): the reference
    leaves canonical nodes empty for naive, py1s, py1br and py2s and refuses py1e; so does shardflow."""
    cases = []
    for algo in (*ALGOS, None):
        for batching in ("per_stream", "device_per_stream"):
            for canonical, sizes in ((4, [3, 40, 40]), (6, [2, 1, 30, 57])):
                cases.append({
                    "sizes": sizes, "streams": [len(sizes) - 2, 2], "canonical": canonical,
                    "world": [1, 2, 1],
                    "batch": 2, "algo": algo, "seed": 5 + canonical, "epoch": 1, "block": 64,
                    "partition": "relaxed", "sampling": "balanced", "granularity": 1, "initial": None,
                    "proportion": [None, None], "repeat": [None, None], "choose": [None, None],
                    "epoch_size": None, "sample_in_epoch": 0, "batching": batching,
                })  # fmt: skip
    reference = _reference(reference_python, tmp_path, "batching", cases)
    ordered = 0
    for i, case in enumerate(cases):
        order = _order(case)
        expected = reference[str(i)]
        if expected.ndim == 1:  # the reference raised ValueError
            assert case["algo"] == "py1e", f"case {i}: the reference refused {case}"
            with pytest.raises(ShuffleError, match="py1e"):
                order.epoch_sample_ids(case["epoch"], WorldShape(*case["world"]), 0)
            continue
        ordered += 1
        assert np.array_equal(
            order.epoch_sample_ids(case["epoch"], WorldShape(*case["world"]), 0), expected
        ), f"case {i}: {case}"
    assert ordered == len(cases) - 4, "the reference orders every case but py1e's"


def test_shuffles_equal_the_reference(reference_python: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(21)
    cases = []
    for i in range(30):
        sizes = rng.integers(0 if i % 4 == 0 else 1, int(rng.choice([5, 60, 500])), int(rng.integers(1, 30)))
        sizes[0] = max(sizes[0], 1)
        cases.append(
            {
                "algo": ALGOS[i % len(ALGOS)],
                "sizes": sizes.tolist(),
                "canonical": int(rng.integers(1, min(int(sizes.sum()), 9) + 1)),
                "seed": int(rng.integers(0, 2**62)),
                "epoch": int(rng.integers(0, 100)),
                "block": int(rng.choice([2, 10, 300, 1 << 18])),
            }
        )
    reference = _reference(reference_python, tmp_path, "shuffle", cases)
    for i, case in enumerate(cases):
        ours = get_shuffle(
            case["algo"], case["sizes"], case["canonical"], case["seed"], case["epoch"], case["block"]
        )
        assert np.array_equal(ours, reference[str(i)]), f"case {i}: {case}"


def test_sampling_and_stream_weights_equal_the_reference(reference_python: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(22)
    sampling = [
        {
            "sizes": rng.integers(1, 90, int(rng.integers(1, 25))).tolist(),
            "choose": int(rng.integers(0, 4000)),
            "granularity": int(rng.integers(1, 12)),
            "seed": int(rng.integers(0, 2**31)),
            "epoch": int(rng.integers(0, 9)),
            "use_epoch": bool(rng.random() < 0.5),
        }
        for _ in range(15)
    ]
    reference = _reference(reference_python, tmp_path, "sampling", sampling)
    for i, case in enumerate(sampling):
        ours = get_sampling(
            case["sizes"], case["choose"], case["granularity"], case["seed"], case["epoch"], case["use_epoch"]
        )
        assert np.array_equal(ours, reference[str(i)]), f"case {i}: {case}"
    weights = []
    for _ in range(15):
        streams = int(rng.integers(1, 6))
        per_stream = rng.integers(1, 5, streams).tolist()
        weights.append(
            {
                "sizes": rng.integers(1, 300, sum(per_stream)).tolist(),
                "streams": per_stream,
                "seed": int(rng.integers(0, 2**31)),
                **_weights_case(rng, streams),
            }
        )
    reference = _reference(reference_python, tmp_path, "weights", weights)
    for i, case in enumerate(weights):
        ours = resolve_stream_weights(
            np.add.reduceat(case["sizes"], np.cumsum([0, *case["streams"][:-1]])),
            case["proportion"],
            case["repeat"],
            case["choose"],
            case["epoch_size"],
            case["seed"],
        )
        assert np.array_equal([*ours.choose, ours.epoch_size], reference[str(i)]), f"case {i}: {case}"
        assert np.array_equal(ours.proportion, reference[f"p{i}"]), f"case {i}: {case}"


@pytest.mark.parametrize("algo", ALGOS)
def test_fast_variants_keep_their_names(algo: str) -> None:
    """The counter-based orders stay available as ``<algo>_fast`` and are not the reference's."""
    sizes = np.full(30, 40)
    fast = get_shuffle(f"{algo}_fast", sizes, 3, 5, 1, 64)
    assert np.array_equal(np.sort(fast), np.arange(1200))
    assert not np.array_equal(fast, get_shuffle(algo, sizes, 3, 5, 1, 64))
