"""The ``shardflow`` command, run as ``python -m shardflow`` in a subprocess: inspect, cache status, clean."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shardflow.format import JSONWriter, MDSWriter

COLUMNS = {"id": "int", "tokens": "ndarray:uint16:8", "text": "str"}


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "shardflow", *args], capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode == 0, f"{args}: rc {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def run_json(*args: str) -> dict[str, Any]:
    return json.loads(run(*args, "--json").stdout)


def write_mds(folder: Path, compression: str | None, count: int = 400) -> Path:
    with MDSWriter(
        out=str(folder), columns=COLUMNS, compression=compression, size_limit=4096, hashes=["sha1", "xxh64"]
    ) as writer:
        for i in range(count):
            writer.write({"id": i, "tokens": np.arange(i, i + 8, dtype=np.uint16), "text": f"sample {i}"})
    return folder


def index_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "index.json").read_text())


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mds(tmp_path_factory.mktemp("plain") / "ds", None)


@pytest.fixture(scope="module")
def zstd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mds(tmp_path_factory.mktemp("zstd") / "ds", "zstd")


# -- inspect ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["plain", "zstd"])
def test_inspect_mds_json_matches_the_index(which: str, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(which)
    shards = index_of(folder)["shards"]
    report = run_json("inspect", str(folder))
    assert report["streams"] == 1 and report["version"] == 2
    assert report["shards"] == len(shards) > 1
    assert report["samples"] == sum(s["samples"] for s in shards) == 400
    assert report["formats"] == ["mds"]
    assert report["columns"] == COLUMNS
    assert report["hashes"] == ["sha1", "xxh64"]
    assert report["bytes"]["raw"] == sum(s["raw_data"]["bytes"] for s in shards)
    if which == "zstd":
        assert report["compression"] == ["zstd"]
        assert report["bytes"]["compressed"] == sum(s["zip_data"]["bytes"] for s in shards)
    else:
        assert report["compression"] == [] and report["bytes"]["compressed"] is None
    assert [s["basename"] for s in report["shard_list"]] == [s["raw_data"]["basename"] for s in shards]
    human = run("inspect", str(folder)).stdout
    assert "samples     400" in human and "tokens" in human and "ndarray:uint16:8" in human


def test_inspect_jsonl_and_split_and_file_url(tmp_path: Path) -> None:
    with JSONWriter(out=str(tmp_path / "ds" / "train"), columns={"id": "int", "text": "str"}) as writer:
        for i in range(50):
            writer.write({"id": i, "text": f"line {i}"})
    shards = index_of(tmp_path / "ds" / "train")["shards"]
    local = run_json("inspect", str(tmp_path / "ds"), "--split", "train")
    remote = run_json("inspect", (tmp_path / "ds").as_uri(), "--split", "train")
    for report in (local, remote):
        assert report["formats"] == ["json"] and report["samples"] == 50
        assert report["columns"] == {"id": "int", "text": "str"}
        assert report["bytes"]["raw"] == sum(s["raw_data"]["bytes"] + s["raw_meta"]["bytes"] for s in shards)
    assert remote["index"] == (tmp_path / "ds").as_uri() + "/train/index.json"
    assert {k: v for k, v in local.items() if k not in ("source", "index")} == {
        k: v for k, v in remote.items() if k not in ("source", "index")
    }


def test_inspect_errors_name_the_path_or_url(tmp_path: Path) -> None:
    missing = run("inspect", str(tmp_path / "nothing"), check=False)
    assert missing.returncode == 1 and str(tmp_path / "nothing") in missing.stderr
    url = (tmp_path / "nothing").as_uri()
    remote = run("inspect", url, check=False)
    assert remote.returncode == 1 and f"{url}/index.json does not exist" in remote.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "index.json").write_text("{not json")
    bad = run("inspect", str(tmp_path / "bad"), check=False)
    assert bad.returncode == 1 and str(tmp_path / "bad" / "index.json") in bad.stderr
    assert run("inspect", check=False).returncode == 2  # usage


# -- cache status / clean --------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path, zstd: Path, held_lock: Callable[[Path], int]) -> Any:
    """A cache filled by a real StreamingDataset read of split 'train', plus a stale temp file, a held lock
    (by a live subprocess), a lock left by a dead pid and a foreign file."""
    from shardflow.dataset import StreamingDataset
    from shardflow.dataset.cache import LOCK_FOLDER

    remote = tmp_path / "remote"
    (remote).mkdir()
    os.symlink(zstd, remote / "train")
    local = tmp_path / "local"
    dataset = StreamingDataset(
        remote=str(remote), local=str(local), split="train", keep_zip=True, cache_limit="1gb"
    )
    for i in (0, 399):  # the first and last shard only
        assert dataset[i]["id"] == i
    root = local / "train"
    assert len(index_of(zstd)["shards"]) >= 4  # the locks below guard shards 1 and 2, not read here
    locks = root / LOCK_FOLDER
    read_shards = [index_of(zstd)["shards"][0], index_of(zstd)["shards"][-1]]
    read = sorted(s["raw_data"]["basename"] for s in read_shards)
    assert sorted(p.name for p in locks.iterdir()) == sorted(
        [
            "cache-budget.lock",
            "index.json.lock",
            *(f"{n}.lock" for n in read),
            *(f"{n}.use.lock" for n in read),
        ]
    )
    stale = root / f".shard.00002.mds.zstd.{dead_pid()}-deadbeef.tmp"
    stale.write_bytes(b"partial")
    dead = locks / "shard.00002.mds.lock"
    dead.write_text(str(dead_pid()))
    held = locks / "shard.00001.mds.lock"
    holder = held_lock(held)
    (root / "notes.txt").write_text("mine")
    return {
        "local": local,
        "root": root,
        "stale": stale,
        "dead": dead,
        "held": held,
        "holder": holder,
        "read": read_shards,
    }


def test_cache_status_reports_shards_temps_and_locks(cache: dict[str, Any], zstd: Path) -> None:
    report = run_json("cache", "status", str(cache["local"]))
    shards = index_of(zstd)["shards"]
    (index,) = report["indexes"]
    assert index["folder"] == "train" and index["error"] is None
    assert index["shards_listed"] == len(shards) and index["shards_present"] == 2
    assert index["compressed_files_kept"] == 2  # keep_zip=True
    assert index["bytes_present"] == shards[0]["raw_data"]["bytes"] + shards[-1]["raw_data"]["bytes"]
    files = [p for p in cache["local"].rglob("*") if p.is_file()]
    assert report["files"] == len(files) and report["bytes"] == sum(p.stat().st_size for p in files)
    (temp,) = report["temporary_files"]
    assert (
        temp["path"] == os.path.join("train", cache["stale"].name) and temp["stale"] and not temp["pid_alive"]
    )
    locks = {Path(lock["path"]).name: lock for lock in report["locks"]}
    held = locks["shard.00001.mds.lock"]
    assert held["held"] and held["pid"] == cache["holder"] and held["pid_alive"]
    dead = locks["shard.00002.mds.lock"]
    assert not dead["held"] and dead["pid"] is not None and not dead["pid_alive"]
    ours = locks["shard.00000.mds.lock"]  # left by the read above: this process, alive, not holding it
    assert not ours["held"] and ours["pid"] == os.getpid() and ours["pid_alive"]
    assert ours["guards"] == "shard.00000.mds"
    assert report["limit"] == 1024**3
    assert index["limit"] == {"bytes": 1024**3, "pid": os.getpid(), "pid_alive": True}
    assert index["shards_downloaded"] == 2
    assert index["bytes_downloaded"] == sum(
        shard[key]["bytes"] for shard in (shards[0], shards[-1]) for key in ("raw_data", "zip_data")
    )
    human = run("cache", "status", str(cache["local"])).stdout
    assert "2 of " in human and "1 stale" in human
    assert "3 held" in human  # shard 1's download lock, and the use locks of the two shards open
    assert "limit in force: 1.0 GiB" in human and "downloaded by shardflow (evictable): 2 shards" in human


def test_cache_clean_spares_held_locks_then_all_spares_index_and_foreign(cache: dict[str, Any]) -> None:
    root: Path = cache["root"]
    before = sorted(p for p in root.rglob("*") if p.is_file())
    dry = run_json("cache", "clean", str(cache["local"]), "--dry-run")
    assert dry["dry_run"] and sorted(p for p in root.rglob("*") if p.is_file()) == before

    report = run_json("cache", "clean", str(cache["local"]))
    assert {item["path"] for item in report["removed"]} == {item["path"] for item in dry["removed"]}
    removed = {Path(item["path"]).name: item["kind"] for item in report["removed"]}
    assert removed[cache["stale"].name] == "temporary" and removed["shard.00002.mds.lock"] == "lock"
    assert "shard.00001.mds.lock" not in removed
    assert {
        "kind": "lock",
        "path": os.path.join("train", ".shardflow-locks", "shard.00001.mds.lock"),
        "reason": "held",
    } in report["kept"]
    assert not cache["stale"].exists() and not cache["dead"].exists() and cache["held"].exists()
    assert all(kind != "shard" for kind in removed.values())
    assert (root / "shard.00000.mds").is_file()

    everything = run_json("cache", "clean", str(cache["local"]), "--all")
    kinds = [item["kind"] for item in everything["removed"]]
    assert kinds.count("shard") == 4  # two shards, raw and compressed
    assert kinds.count("entry") == 2  # the cache's record of them
    left = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    held_by_readers = [  # the fixture's dataset still has its two shards open (their use locks)
        f".shardflow-locks/{s['raw_data']['basename']}.use.lock" for s in cache["read"]
    ]
    assert left == sorted(
        [
            ".shardflow-cache/limit.json",
            ".shardflow-locks/shard.00001.mds.lock",
            *held_by_readers,
            "index.json",
            "notes.txt",
        ]
    )
    status = run_json("cache", "status", str(cache["local"]))
    assert status["indexes"][0]["shards_present"] == 0
    assert sorted((Path(lk["path"]).name, lk["held"]) for lk in status["locks"]) == sorted(
        [("shard.00001.mds.lock", True), *((Path(name).name, True) for name in held_by_readers)]
    )


def test_cache_commands_name_a_missing_folder(tmp_path: Path) -> None:
    for args in (["status"], ["clean"], ["clean", "--all"]):
        result = run("cache", *args, str(tmp_path / "gone"), check=False)
        assert result.returncode == 1 and str(tmp_path / "gone") in result.stderr, result.stderr


# -- cache clean removes only what shardflow made ----------------------------------------------------


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    """``shardflow cache ... --json`` run in this process (so that its locks are this process's)."""
    from shardflow._cli import main

    assert main(["cache", *args, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def tree(*tops: Path) -> set[Path]:
    """Every path under ``tops`` (symlinks listed, never followed)."""
    found: set[Path] = set()
    for top in tops:
        for folder, dirs, names in os.walk(top):
            found.update(Path(folder) / name for name in (*dirs, *names))
    return found


@pytest.fixture
def mixed(tmp_path: Path, zstd: Path) -> dict[str, Any]:
    """A folder holding a cache (a real StreamingDataset's read of 'train'), a dataset MDSWriter wrote,
    user files named like temporary files and shards, and symlinks to an outside folder that holds shards,
    an index and bookkeeping of its own."""
    from shardflow.dataset import StreamingDataset

    (tmp_path / "remote").mkdir()
    os.symlink(zstd, tmp_path / "remote" / "train")
    top = tmp_path / "local"
    dataset = StreamingDataset(remote=str(tmp_path / "remote"), local=str(top), split="train", keep_zip=True)
    for i in (0, 399):  # the first and last shard only
        assert dataset[i]["id"] == i
    cache = top / "train"
    dead = dead_pid()
    ours = [  # what shardflow's killed writers leave: named after a listed file, or in its bookkeeping
        cache / f".shard.00002.mds.zstd.{dead}-deadbeef.tmp",
        cache / f".shard.00002.mds.sizes.{dead}-0000abcd.tmp",  # a writer's tagged name
        cache / f".index.json.{dead}-0badcafe.tmp",
        cache / ".shardflow-cache" / f".shard.00000.mds.json.{dead}-12345678.tmp",
    ]
    mine = write_mds(top / "mine", None, count=100)
    users = [
        top / ".bashrc.12345-deadbeef.tmp",
        top / f".bashrc.{dead}-deadbeef.tmp",
        cache / ".bashrc.12345-deadbeef.tmp",
        cache / f".notes.txt.{dead}-deadbeef.tmp",
        cache / "shard.00001.mds",  # listed by the index, but no cache entry: not downloaded by shardflow
        cache / "shard.00999.mds",
        mine / f".shard.00000.mds.{dead}-deadbeef.tmp",  # in a dataset that is no cache
    ]
    for path in (*ours, *users):
        path.write_bytes(b"data")
    tombstone = cache / ".shardflow-cache" / "shard.00002.mds.evicted"
    tombstone.touch()
    outside = write_mds(tmp_path / "outside", None, count=100)
    (outside / ".shardflow-cache").mkdir()
    (outside / ".shardflow-cache" / "shard.00000.mds.json").write_text(
        json.dumps({"name": "shard.00000.mds", "files": ["shard.00000.mds"], "bytes": 1})
    )
    (outside / f".shard.00000.mds.{dead}-deadbeef.tmp").write_bytes(b"data")
    os.symlink(outside, top / "link")
    os.symlink(outside, cache / "sub")
    os.symlink(outside / "shard.00000.mds", cache / "shard.00998.mds")
    entries = [json.loads(p.read_text()) for p in (cache / ".shardflow-cache").glob("shard*.json")]
    assert sorted(entry["name"] for entry in entries) == [
        "shard.00000.mds",
        index_of(zstd)["shards"][-1]["raw_data"]["basename"],
    ]
    return {
        "dataset": dataset,  # alive for the whole test
        "top": top,
        "cache": cache,
        "mine": mine,
        "outside": outside,
        "ours": ours,
        "users": users,
        "tombstone": tombstone,
        "downloaded": [cache / name for entry in entries for name in entry["files"]],
    }


@pytest.mark.parametrize("remove_shards", [False, True], ids=["clean", "clean --all"])
def test_cache_clean_removes_only_what_shardflow_made(
    mixed: dict[str, Any], remove_shards: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    top, cache = mixed["top"], mixed["cache"]
    books = cache / ".shardflow-cache"
    expected = {*mixed["ours"], *(cache / ".shardflow-locks").glob("*.lock")}  # no lock is held
    if remove_shards:
        entries = {p for p in books.glob("*.json") if p.name not in ("limit.json", "remote.json")}
        markers = {mixed["tombstone"], *books.glob("remote.json")}  # the remote named there, if any
        expected |= {*mixed["downloaded"], *entries, *markers}
    args = ["clean", str(top), *(["--all"] if remove_shards else [])]
    before = tree(top, mixed["outside"])
    dry = in_process(capsys, *args, "--dry-run")
    assert tree(top, mixed["outside"]) == before

    real = in_process(capsys, *args)
    disappeared = before - tree(top, mixed["outside"])
    assert {top / item["path"] for item in dry["removed"]} == disappeared
    assert dry["removed"] == real["removed"] and dry["kept"] == real["kept"]
    assert disappeared == expected
    kinds = {item["kind"] for item in real["removed"]}
    assert kinds == (
        {"temporary", "lock", "shard", "entry", "marker"} if remove_shards else {"temporary", "lock"}
    )
    assert all(path.exists() for path in mixed["users"])  # including the temporary-looking ones
    assert (cache / "index.json").is_file() and (mixed["mine"] / "index.json").is_file()
    assert not real["errors"]


def test_cache_clean_all_lets_the_folder_cache_another_remote(
    mixed: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shardflow.dataset import StreamingDataset

    in_process(capsys, "clean", str(mixed["top"]), "--all")
    assert not (mixed["cache"] / ".shardflow-cache" / "remote.json").exists()
    other = tmp_path / "other"
    write_mds(other / "train", None, count=50)
    dataset = StreamingDataset(remote=str(other), local=str(mixed["top"]), split="train")
    assert [dataset[i]["id"] for i in (0, 49)] == [0, 49]


def test_cache_clean_leaves_entry_files_out_of_the_folder_and_says_so(
    mixed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    cache, outside = mixed["cache"], mixed["outside"]
    (cache / "mine.mds").write_bytes(b"data")  # really listed below: removed
    listed = [
        "../../outside/shard.00000.mds",
        "shard.00998.mds",
        "sub/shard.00001.mds",
        "index.json",
        "mine.mds",
    ]
    entry = cache / ".shardflow-cache" / "tampered.json"
    entry.write_text(json.dumps({"name": "tampered", "files": listed, "bytes": 4, "unknown": {"key": 1}}))
    before = tree(outside)

    report = in_process(capsys, "clean", str(mixed["top"]), "--all")
    assert tree(outside) == before and (cache / "shard.00998.mds").is_symlink()
    assert os.path.join("train", "mine.mds") in {item["path"] for item in report["removed"]}
    reasons = {Path(item["path"]).name: item["reason"] for item in report["kept"] if item["kind"] == "shard"}
    assert "leads out of the cache folder" in reasons["shard.00000.mds"]
    assert "is a symlink" in reasons["shard.00998.mds"]
    assert "a folder on its way is a symlink" in reasons["shard.00001.mds"]
    assert "the index" in reasons["index.json"] and (cache / "index.json").is_file()
    assert all("tampered.json lists it" in reason for reason in reasons.values())
    assert entry.is_file()  # its files are not all gone: the entry, and the remote it names, stay
    kept = {item["path"]: item["reason"] for item in report["kept"] if item["kind"] == "marker"}
    marker = cache / ".shardflow-cache" / "remote.json"
    assert kept == ({os.path.relpath(marker, mixed["top"]): "1 cache entry left"} if marker.exists() else {})


def test_cache_status_sees_only_caches(mixed: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from shardflow.format._atomic import temp_path

    cache = mixed["cache"]
    live = [temp_path(cache / "shard.00003.mds"), temp_path(cache / "shard.00003.mds", "part")]
    for path in live:
        path.write_bytes(b"data")  # this process's: in use
    report = in_process(capsys, "status", str(mixed["top"]))
    assert [index["folder"] for index in report["indexes"]] == ["train"]
    assert report["not_caches"] == ["mine"]
    temps = {mixed["top"] / temp["path"]: temp["stale"] for temp in report["temporary_files"]}
    assert temps == {**{path: True for path in mixed["ours"]}, **{path: False for path in live}}
    assert all(Path(lock["path"]).parent == Path("train", ".shardflow-locks") for lock in report["locks"])
    regular = [p for p in tree(mixed["top"]) if p.is_file() and not p.is_symlink()]
    assert report["files"] == len(regular)  # the symlinked folders are not entered
    human = run("cache", "status", str(mixed["top"])).stdout
    assert "not a cache mine/index.json" in human


def test_a_folder_whose_bookkeeping_is_a_symlink_is_no_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = write_mds(tmp_path / "ds", None, count=50)
    (tmp_path / "books").mkdir()
    os.symlink(tmp_path / "books", dataset / ".shardflow-cache")
    (tmp_path / "books" / "shard.00000.mds.json").write_text(
        json.dumps({"name": "shard.00000.mds", "files": ["shard.00000.mds"], "bytes": 1})
    )
    before = tree(tmp_path)
    report = in_process(capsys, "clean", str(dataset), "--all")
    assert report["removed"] == [] and tree(tmp_path) == before
    assert in_process(capsys, "status", str(dataset))["not_caches"] == ["."]
