"""Fuzzing: damaged shards and indexes give FormatError subclasses, never crashes or other errors."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardflow.format.errors import FormatError, IndexFormatError
from shardflow.format.reader import LocalDataset

FUZZ = settings(
    max_examples=80,
    deadline=None,
    # capped_memory is meant to hold for every example of the test
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# (dataset, shard position in its index, the index fields naming its files)
TARGETS = {
    "mds_seq": ("mds/uncompressed", 1, ["raw_data"]),
    "mds_all_encodings": ("mds/all_encodings", 3, ["raw_data"]),
    "mds_tiny": ("mds/tiny", 0, ["raw_data"]),
    "csv": ("csv/plain", 0, ["raw_data", "raw_meta"]),
    "json": ("json/plain", 1, ["raw_data", "raw_meta"]),
    "mds_zstd": ("mds/compressed/zstd", 2, ["zip_data"]),
    "mds_gz": ("mds/compressed/gz_5", 2, ["zip_data"]),
    "mds_bz2": ("mds/compressed/bz2", 2, ["zip_data"]),
    "mds_br": ("mds/compressed/br_4", 2, ["zip_data"]),
    "mds_snappy": ("mds/compressed/snappy", 2, ["zip_data"]),
}


@pytest.fixture(scope="module")
def one_shard_datasets(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """For each target, a folder holding the one shard to damage and an index listing only it."""
    folders = {}
    for name, (dataset, position, fields) in TARGETS.items():
        folder = tmp_path_factory.mktemp(name)
        index = json.loads((fixtures_dir / dataset / "index.json").read_text())
        shard = index["shards"][position]
        for field in fields:
            shutil.copyfile(
                fixtures_dir / dataset / shard[field]["basename"], folder / shard[field]["basename"]
            )
        index["shards"] = [shard]
        (folder / "index.json").write_text(json.dumps(index, sort_keys=True))
        folders[name] = folder
    return folders


@st.composite
def damage(draw: st.DrawFn, data: bytes) -> bytes:
    """Flip a few bytes (mostly in the header and offsets) and maybe cut the end off."""
    content = bytearray(data)
    position = st.one_of(st.integers(0, min(len(data), 96) - 1), st.integers(0, len(data) - 1))
    for at, value in draw(st.lists(st.tuples(position, st.integers(0, 255)), max_size=6)):
        content[at] = value
    if draw(st.booleans()):
        del content[draw(st.integers(0, len(content))) :]
    return bytes(content)


def read_everything(folder: Path, **kwargs: Any) -> None:
    with LocalDataset(folder, **kwargs) as dataset:
        list(dataset)
        dataset.get_batch(list(range(len(dataset) - 1, -1, -2)))


@pytest.mark.parametrize("target", list(TARGETS))
@FUZZ
@given(data=st.data())
def test_damaged_shard_file(
    one_shard_datasets: dict[str, Path], target: str, data: st.DataObject, capped_memory: None
) -> None:
    folder = one_shard_datasets[target]
    index = json.loads((folder / "index.json").read_text())
    shard = index["shards"][0]
    field = data.draw(st.sampled_from(TARGETS[target][2]))
    path = folder / shard[field]["basename"]
    original = path.read_bytes()
    damaged = data.draw(damage(original))
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        work = Path(scratch) / "dataset"
        shutil.copytree(folder, work)
        (work / path.name).write_bytes(damaged)
        if data.draw(st.booleans()):  # let the damage past the size check, into the parser
            shard[field]["bytes"] = len(damaged)
            (work / "index.json").write_text(json.dumps(index, sort_keys=True))
        try:
            read_everything(work)
        except FormatError:
            pass
        assert not [name for name in os.listdir(work) if name.endswith(".tmp")]


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats()
    | st.sampled_from(["", "..", "../x.mds", "/etc/passwd", "a/b/c.mds", "str", "int", "zstd", "mds", "csv"])
    | st.text(max_size=8).filter(lambda text: "pkl" not in text),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)


def json_paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    children = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, child in children:
        yield from json_paths(child, (*prefix, key))


@st.composite
def mutated_index(draw: st.DrawFn, text: str) -> str:
    """A JSON-level mutation of an index (replace, delete or add a value), or a damaged text."""
    if draw(st.integers(0, 4)) == 0:
        cut = draw(st.integers(0, len(text)))
        return text[:cut] + draw(st.text(max_size=3)) + text[cut + draw(st.integers(0, 3)) :]
    index = json.loads(text)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(json_paths(index))))
        if not path:
            index = draw(JSON_VALUES)
            continue
        parent = index
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(JSON_VALUES)
        else:
            parent.append(draw(JSON_VALUES))
        if not isinstance(index, (dict, list)):
            break
    return json.dumps(index, sort_keys=True)


@pytest.mark.parametrize("dataset", ["mds/uncompressed", "mds/merged", "csv/zstd", "json/plain"])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_index(fixtures_dir: Path, dataset: str, data: st.DataObject) -> None:
    text = data.draw(mutated_index((fixtures_dir / dataset / "index.json").read_text()))
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch) / "dataset"
        shutil.copytree(fixtures_dir / dataset, work, copy_function=shutil.copyfile)
        for folder, _, _ in os.walk(work):
            os.chmod(folder, 0o755)
        (work / "index.json").write_text(text)
        try:
            dataset_object = LocalDataset(work)
        except IndexFormatError:
            return
        try:  # an index that passes may still disagree with its shards: that is theirs to report
            read_everything(work)
        except FormatError:
            pass
        assert len(dataset_object) >= 0
