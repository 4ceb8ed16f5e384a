"""A checkpoint written by either library resumes exactly in the other, mid-epoch.

mosaicml-streaming 0.13 runs in its own venv (one subprocess for every case and both directions). For each
configuration, each library reads the first ``k`` samples of a shuffled epoch and saves
``state_dict(num_samples=k, from_beginning=True)`` as JSON; the other library loads it and reads the rest.
The prefix and the rest together must be the saving library's whole epoch, in order, so every sample of
the epoch comes exactly once across the stop. ``k`` is a multiple of the canonical nodes (the reference
rounds resume points down to that).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from shardflow.dataset import StreamingDataset
from shardflow.format import MDSWriter

NUM_SAMPLES = 240
# (shuffle_algo, num_canonical_nodes, batch_size, epoch_size, k, seed)
CASES = [
    ("py1e", 4, 6, None, 96, 17),
    ("py1s", 8, 4, None, 120, 5),
    ("naive", 2, 5, None, 70, 9176),
    ("py1e", 3, 4, 150, 63, 3),
]

_REFERENCE = r"""
import json, logging, sys, warnings
warnings.simplefilter("ignore")
logging.disable(logging.WARNING)
from streaming import StreamingDataset

def dataset(case):
    return StreamingDataset(local=case["local"], shuffle=True, shuffle_algo=case["algo"],
                            num_canonical_nodes=case["canonical"], batch_size=case["batch"],
                            epoch_size=case["epoch_size"], shuffle_seed=case["seed"])

out = []
for case in json.load(open(sys.argv[1])):
    ds = dataset(case)
    full = [int(s["id"]) for s in ds]
    ds = dataset(case)
    prefix = []
    for sample in ds:
        prefix.append(int(sample["id"]))
        if len(prefix) == case["k"]:
            break
    state = ds.state_dict(num_samples=case["k"], from_beginning=True)
    ds = dataset(case)
    ds.load_state_dict(case["shardflow_state"])
    rest = [int(s["id"]) for s in ds]
    out.append({"full": full, "prefix": prefix, "state": json.loads(json.dumps(state)), "rest": rest})
json.dump(out, open(sys.argv[2], "w"))
"""


def _dataset(local: Path, case: tuple) -> StreamingDataset:
    algo, canonical, batch, epoch_size, _k, seed = case
    return StreamingDataset(
        local=str(local), shuffle=True, shuffle_algo=algo, num_canonical_nodes=canonical,
        batch_size=batch, epoch_size=epoch_size, shuffle_seed=seed,
    )  # fmt: skip


def test_checkpoints_cross_load_both_ways(reference_python: Path, tmp_path: Path) -> None:
    local = tmp_path / "data"
    with MDSWriter(out=str(local), columns={"id": "int"}, size_limit=200) as writer:
        for i in range(NUM_SAMPLES):
            writer.write({"id": i})
    ours: list[dict] = []
    payload = []
    for case in CASES:
        full = [int(s["id"]) for s in _dataset(local, case)]
        ds = _dataset(local, case)
        prefix = []
        for sample in ds:
            prefix.append(int(sample["id"]))
            if len(prefix) == case[4]:
                break
        state = json.loads(json.dumps(ds.state_dict(num_samples=case[4], from_beginning=True)))
        ours.append({"full": full, "prefix": prefix})
        algo, canonical, batch, epoch_size, k, seed = case
        payload.append({
            "local": str(local), "algo": algo, "canonical": canonical, "batch": batch,
            "epoch_size": epoch_size, "k": k, "seed": seed, "shardflow_state": state,
        })  # fmt: skip
    cases_path, out_path = tmp_path / "cases.json", tmp_path / "out.json"
    cases_path.write_text(json.dumps(payload))
    result = subprocess.run(
        [str(reference_python), "-c", _REFERENCE, str(cases_path), str(out_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    theirs = json.loads(out_path.read_text())
    for case, mine, ref in zip(CASES, ours, theirs, strict=True):
        size = case[3] or NUM_SAMPLES
        assert case[4] % case[1] == 0, case  # where the reference resumes exactly
        assert len(mine["full"]) == len(ref["full"]) == size, case
        assert sorted(ref["full"]) == sorted(set(ref["full"])), case  # each sample once per epoch
        # The reference's checkpoint, resumed here.
        resumed = _dataset(local, case)
        resumed.load_state_dict(ref["state"])
        rest = [int(s["id"]) for s in resumed]
        assert ref["prefix"] + rest == ref["full"], case
        # Ours, resumed by the reference.
        assert mine["prefix"] + ref["rest"] == mine["full"], case

