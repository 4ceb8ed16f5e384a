"""read_index accepts every reference index and names the file and field of a bad one; merge_index."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardflow.format.errors import IndexFormatError, MissingDependencyError
from shardflow.format.index import encode_index, merge_index, read_index, write_index


def all_fixture_indexes(fixtures_dir: Path) -> list[Path]:
    return sorted(fixtures_dir.rglob("index.json"))


def test_reads_every_reference_index_unchanged(fixtures_dir: Path) -> None:
    paths = all_fixture_indexes(fixtures_dir)
    assert len(paths) >= 20
    for path in paths:
        index = read_index(path)
        assert index == json.loads(path.read_text()), path  # nothing to fill in: the reference writes all
        assert sum(shard["samples"] for shard in index["shards"]) > 0


def test_folder_or_file(fixtures_dir: Path) -> None:
    folder = fixtures_dir / "mds" / "tiny"
    assert read_index(folder) == read_index(folder / "index.json")


def test_writer_layout_round_trips(fixtures_dir: Path, tmp_path: Path) -> None:
    for path in all_fixture_indexes(fixtures_dir):
        if path.parent.name == "merged":
            continue  # merged indexes keep the reference's unsorted top level
        shards = read_index(path)["shards"]
        assert encode_index(shards) == path.read_bytes(), path
    written = write_index(tmp_path, read_index(fixtures_dir / "mds" / "tiny")["shards"])
    assert written.read_bytes() == (fixtures_dir / "mds" / "tiny" / "index.json").read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]  # no temporary file left


def test_missing_index(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        read_index(tmp_path)


def tiny_index(fixtures_dir: Path) -> dict[str, Any]:
    return json.loads((fixtures_dir / "mds" / "tiny" / "index.json").read_text())


def write_json(tmp_path: Path, obj: Any) -> Path:
    path = tmp_path / "index.json"
    path.write_text(json.dumps(obj))
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not valid JSON"),
        ('{"shards": [{"column_encodings": ["int", "str"], "col', "not valid JSON"),  # truncated
        ("[1, 2]", "expected a JSON object"),
        ('{"shards": []}', "'version' is missing"),
        ('{"shards": [], "version": 3}', "version 3 is not supported"),
        ('{"shards": {}, "version": 2}', "'shards' is {}"),
    ],
)
def test_corrupt_top_level(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "index.json"
    path.write_text(text)
    with pytest.raises(IndexFormatError, match=message) as info:
        read_index(path)
    assert str(path) in str(info.value)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "index.json"
    path.write_bytes(b'{"version": 2, "shards": ["\xff"]}')
    with pytest.raises(IndexFormatError, match="not UTF-8"):
        read_index(path)


def break_shard(shard: dict[str, Any], change: str) -> None:
    """Apply one named corruption to a copy of the tiny shard entry."""
    if change == "drop_format":
        del shard["format"]
    elif change == "bad_format":
        shard["format"] = "feather"
    elif change == "negative_samples":
        shard["samples"] = -1
    elif change == "bool_samples":
        shard["samples"] = True
    elif change == "shard_version":
        shard["version"] = 1
    elif change == "column_mismatch":
        shard["column_names"] = ["number"]
    elif change == "unknown_encoding":
        shard["column_encodings"] = ["int", "varchar"]
    elif change == "wrong_size":
        shard["column_sizes"] = [4, None]
    elif change == "repeated_column":
        shard["column_names"] = ["a", "a"]
    elif change == "compression_without_zip":
        shard["compression"] = "zstd"
    elif change == "zip_without_compression":
        shard["zip_data"] = dict(shard["raw_data"], basename="shard.00000.mds.zstd")
    elif change == "unknown_compression":
        shard["compression"] = "lzma"
        shard["zip_data"] = dict(shard["raw_data"], basename="shard.00000.mds.lzma")
    elif change == "bad_hashes":
        shard["raw_data"]["hashes"] = {"sha1": 5}
    elif change == "no_raw":
        shard["raw_data"] = None
    elif change == "negative_bytes":
        shard["raw_data"]["bytes"] = -3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("drop_format", "'format' is missing"),
        ("bad_format", "format 'feather' is unknown"),
        ("negative_samples", "samples is -1"),
        ("bool_samples", "'samples' is True"),
        ("shard_version", "version 1 is not supported"),
        ("column_mismatch", "1 column_names but 2 column_encodings"),
        ("unknown_encoding", "unknown encoding 'varchar'"),
        ("wrong_size", "has size 4"),
        ("repeated_column", "repeat a name"),
        ("compression_without_zip", "zip_data: missing"),
        ("zip_without_compression", "compression is null"),
        ("unknown_compression", "compression 'lzma' is unknown"),
        ("bad_hashes", "map of algorithm to hex digest"),
        ("no_raw", "raw_data: missing"),
        ("negative_bytes", "bytes is -3"),
    ],
)
def test_bad_shard_fields(fixtures_dir: Path, tmp_path: Path, change: str, message: str) -> None:
    index = tiny_index(fixtures_dir)
    break_shard(index["shards"][0], change)
    path = write_json(tmp_path, index)
    with pytest.raises(IndexFormatError, match=message) as info:
        read_index(path)
    assert str(path) in str(info.value) and "shard 0" in str(info.value)


@pytest.mark.parametrize(
    "name",
    [
        "../evil.mds",
        "/etc/passwd",
        "a/../../b",
        "./shard.mds",
        "a/b/c.mds",
        "C:/x.mds",
        "a\\..\\b",
        "",
        "a//b",
    ],
)
def test_basenames_that_escape_the_folder(fixtures_dir: Path, tmp_path: Path, name: str) -> None:
    index = tiny_index(fixtures_dir)
    index["shards"][0]["raw_data"]["basename"] = name
    with pytest.raises(IndexFormatError, match="basename"):
        read_index(write_json(tmp_path, index))


def test_one_subfolder_and_duplicates(fixtures_dir: Path, tmp_path: Path) -> None:
    index = tiny_index(fixtures_dir)
    index["shards"][0]["raw_data"]["basename"] = "part7/shard.00000.mds"
    assert read_index(write_json(tmp_path, index))["shards"][0]["raw_data"]["basename"].startswith("part7/")
    index["shards"].append(index["shards"][0])
    with pytest.raises(IndexFormatError, match="also named by shard 0"):
        read_index(write_json(tmp_path, index))


def test_optional_fields_get_defaults(fixtures_dir: Path, tmp_path: Path) -> None:
    index = tiny_index(fixtures_dir)
    for key in ("compression", "hashes", "size_limit", "zip_data"):
        del index["shards"][0][key]
    del index["shards"][0]["raw_data"]["hashes"]
    shard = read_index(write_json(tmp_path, index))["shards"][0]
    assert (shard["compression"], shard["hashes"], shard["size_limit"], shard["zip_data"]) == (
        None,
        [],
        None,
        None,
    )
    assert shard["raw_data"]["hashes"] == {}


@pytest.mark.parametrize(("fmt", "field"), [("json", "columns"), ("csv", "newline"), ("tsv", "column_names")])
def test_text_format_fields(fixtures_dir: Path, tmp_path: Path, fmt: str, field: str) -> None:
    index = json.loads((fixtures_dir / fmt / "plain" / "index.json").read_text())
    del index["shards"][1][field]
    with pytest.raises(IndexFormatError, match=f"shard 1: the field '{field}' is missing"):
        read_index(write_json(tmp_path, index))


# -- merge_index ---------------------------------------------------------------------------------------


@pytest.fixture
def partitions(copy_fixture: Callable[[str], Path]) -> Path:
    """A writable copy of mds/merged without its merged index."""
    root = copy_fixture("mds/merged")
    (root / "index.json").unlink()
    return root


def test_merge_from_root_matches_reference(partitions: Path, fixtures_dir: Path) -> None:
    merge_index(str(partitions))
    assert (partitions / "index.json").read_bytes() == (fixtures_dir / "mds/merged/index.json").read_bytes()
    assert not [p for p in partitions.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("form", ["paths", "folders", "pairs", "keywords"])
def test_merge_from_list_matches_reference(partitions: Path, fixtures_dir: Path, form: str) -> None:
    parts = [partitions / "part0" / "index.json", partitions / "part1" / "index.json"]
    if form == "paths":
        merge_index([str(p) for p in parts], str(partitions))
    elif form == "folders":
        merge_index([str(p.parent) + "/" for p in parts] * 2, partitions)  # duplicates are dropped
    elif form == "pairs":
        merge_index([(str(p), f"s3://bucket/{p.parent.name}/index.json") for p in parts], str(partitions))
    else:
        merge_index(index_file_urls=[str(p) for p in parts], out=str(partitions), keep_local=True)
    assert (partitions / "index.json").read_bytes() == (fixtures_dir / "mds/merged/index.json").read_bytes()


def test_merge_errors(partitions: Path, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="merge_index"):
        merge_index(42)
    with pytest.raises(FileNotFoundError, match="absent.*does not exist"):
        merge_index([str(tmp_path / "absent" / "index.json")], str(partitions))
    twin = tmp_path / "other" / "part0"
    twin.parent.mkdir()
    (partitions / "part0").rename(twin)
    (partitions / "part1").rename(partitions / "part0")
    with pytest.raises(IndexFormatError, match="both name 'part0/shard.00000.mds'"):
        merge_index([str(twin / "index.json"), str(partitions / "part0" / "index.json")], str(partitions))
    assert not (partitions / "index.json").exists()


def test_merging_a_merged_index_is_refused(partitions: Path) -> None:
    merge_index(str(partitions))
    nested = partitions.parent / "outer"
    nested.mkdir()
    partitions.rename(nested / "merged")
    with pytest.raises(IndexFormatError, match="itself a merged index"):
        merge_index(str(nested))


def test_merge_uploads_the_index(
    partitions: Path, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uploaded: dict[str, bytes] = {}

    class Recorder:
        """The remote root holds the partitions (their local copies are used) and a stale merged index."""

        def upload(self, local_path: Path, relative_name: str) -> None:
            assert "waited" in uploaded, "index.json handed over without wait()"
            uploaded[relative_name] = Path(local_path).read_bytes()

        def wait(self) -> None:
            uploaded["waited"] = b""

        def finish(self) -> None:
            uploaded["finished"] = b""

        def list_objects(self, prefix: str = "") -> list[str]:
            return [
                "index.json",
                "part0/index.json",
                "part0/shard.00000.mds",
                "part1/index.json",
                "x/y/index.json",
            ]

        def download(self, relative_name: str, local_path: Path) -> Path:
            raise AssertionError(f"{relative_name} exists locally: no download expected")

    monkeypatch.setattr("shardflow.format.merge.get_uploader", lambda out: Recorder())
    monkeypatch.setattr("shardflow.format.merge.remote_uploader", lambda remote, **options: Recorder())
    merge_index((str(partitions), "mem://bucket/merged"), keep_local=False)
    assert set(uploaded) == {"waited", "index.json", "finished"}
    assert uploaded["index.json"] == (fixtures_dir / "mds/merged/index.json").read_bytes()
    assert not (partitions / "index.json").exists()  # keep_local=False removes the local copy


def test_merge_index_is_importable_from_its_old_and_new_homes() -> None:
    import shardflow.format
    import shardflow.format.index
    import shardflow.format.merge

    assert shardflow.format.index.merge_index is shardflow.format.merge.merge_index is merge_index
    assert shardflow.format.merge_index is merge_index


def test_merge_nothing_writes_nothing(tmp_path: Path) -> None:
    merge_index(str(tmp_path))
    merge_index([], str(tmp_path))
    assert not list(tmp_path.iterdir())


def test_merge_to_remote_needs_an_uploader(partitions: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shardflow.format.upload.entry_points", lambda group: [])  # a format-only install
    parts = [str(partitions / name / "index.json") for name in ("part0", "part1")]
    with pytest.raises(MissingDependencyError, match="pip install shardflow-storage"):
        merge_index(parts, "s3://bucket/merged")


@pytest.mark.parametrize(
    "args",
    [
        ("s3://bucket/data",),  # a remote root
        ((".", "s3://bucket/data"),),
        (["s3://bucket/data/part0/index.json"], "."),  # a remote partition index
        ([("absent/part0/index.json", "s3://bucket/data/part0/index.json")], "."),  # local copy missing
    ],
)
def test_merge_remote_needs_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[Any, ...]
) -> None:
    monkeypatch.setattr("shardflow.format.upload.entry_points", lambda group: [])  # a format-only install
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingDependencyError, match=r"'s3://bucket/data.*pip install shardflow-storage"):
        merge_index(*args)
    assert not list(tmp_path.iterdir())


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from(["mds", "csv", "str", "int", "zstd", "../x"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.sampled_from(["shards", "version", "shard", "raw_data", "columns", "column_sizes"]),
    value=JSON_VALUES,
)
def test_any_field_value_is_accepted_or_an_index_error(
    fixtures_dir: Path, tmp_path: Path, key: str, value: Any
) -> None:
    index = json.loads((fixtures_dir / "json" / "plain" / "index.json").read_text())
    mds = tiny_index(fixtures_dir)
    targets = {
        "shards": index,
        "version": index,
        "shard": index["shards"][1],
        "columns": index["shards"][0],
        "raw_data": index["shards"][0]["raw_data"],
        "column_sizes": mds["shards"][0],
    }
    target = targets[key]
    target[key if key != "shard" else "format"] = value
    for obj in (index, mds):
        try:
            read_index(write_json(tmp_path, obj))
        except IndexFormatError:
            pass
