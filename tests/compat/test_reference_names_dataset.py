"""The dataset side of mosaicml-streaming 0.13's public names, and the builtin exceptions its users catch.

:data:`COMMON` runs once in the reference venv (a subprocess, the reference's classes in scope) and in this
process with shardflow's, over the same datasets (written here by shardflow; the reference reads them).
Every case builds a ``StreamingDataset`` with a remote and its own empty cache folder, and records its
shard table, the streams' resolved weights (types included), ``resample_streams``, ``cache_usage`` as
shards are prepared and evicted, and ``next_epoch``; each must be the reference's. Each error case must
raise shardflow's own class, also an instance of the builtin exception the reference raises there.
"""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shardflow.dataset import Stream, StreamingDataset
from shardflow.dataset.errors import IndexNotFoundError, NoShardsError
from shardflow.format import MDSWriter


def _format_helpers() -> Any:
    """The format side's comparison helpers (``assert_same``, ``_builtin``), from the file beside this."""
    spec = importlib.util.spec_from_file_location(
        "_reference_names_format", Path(__file__).with_name("test_reference_names_format.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_HELPERS = _format_helpers()
assert_same, _builtin = _HELPERS.assert_same, _HELPERS._builtin

COMMON = r'''
import os

TABLE = ("num_shards", "num_streams", "samples_per_stream", "sample_offset_per_stream",
         "sample_offset_per_shard", "shard_offset_per_stream", "stream_per_shard", "epoch_size")


def build(root, name, weights, kwargs):
    """A dataset over remotes a (plain) and b (zstd) of ``root``, cached under ``root/name``."""
    streams = [
        Stream(remote=os.path.join(root, remote), local=os.path.join(root, name, remote), **w)
        for remote, w in zip(("a", "b"), weights)
    ]
    return StreamingDataset(streams=streams, **kwargs)


def describe(ds):
    """Everything the names give for this dataset, in plain values (arrays kept with their dtype)."""
    found = {name: getattr(ds, name) for name in TABLE}
    found["weights"] = [(s.proportion, s.repeat, s.choose) for s in ds.streams]
    found["index_sizes"] = [s.get_index_size() for s in ds.streams]
    found["safe_keep_zip"] = [s.safe_keep_zip for s in ds.streams]
    found["validate_weights"] = type(ds.streams[0]).validate_weights(
        [type(s)(remote=s.remote, local=s.local, proportion=w) for s, w in zip(ds.streams, (1, 3))]
    )
    found["resample"] = {
        (epoch, stream): ds.resample_streams(epoch, stream) for epoch in (0, 1) for stream in (None, 0, 1)
    }
    usage = [ds.next_epoch, ds.cache_usage]
    ds.prepare_shard(0)
    ds.prepare_shard(ds.num_shards - 1)
    usage.append(ds.cache_usage)
    ds.evict_shard(0)
    usage.append(ds.cache_usage)
    ds.evict_coldest_shard()
    usage.append(ds.cache_usage)
    found["cache_and_epoch"] = usage
    return found


def single(root, name, kwargs):
    """A dataset of remote a alone built through stream_name/stream_config."""
    ds = StreamingDataset(remote=os.path.join(root, "a"), local=os.path.join(root, name), **kwargs)
    stream = ds.streams[0]
    return [type(stream).__name__, stream.proportion, stream.repeat, stream.choose, ds.epoch_size]


def error_case(code, root):
    """The exception ``code`` raises (it sees ``root``), or None."""
    try:
        exec(code, {**globals(), "root": root})
    except Exception as err:
        return err
    return None
'''

REFERENCE_MAIN = """
import pickle, sys
from streaming import Stream, StreamingDataset
root, out = sys.argv[1], sys.argv[2]
answers = {"cases": {}, "single": {}, "errors": {}}
for name, (weights, kwargs) in CASES["cases"].items():
    answers["cases"][name] = describe(build(root, "ref-" + name, weights, kwargs))
for name, kwargs in CASES["single"].items():
    answers["single"][name] = single(root, "ref-single-" + name, kwargs)
for name, code in CASES["errors"].items():
    err = error_case(code, os.path.join(root, "ref-errors"))
    answers["errors"][name] = err and [(c.__module__, c.__qualname__) for c in type(err).__mro__]
with open(out, "wb") as f:
    pickle.dump(answers, f)
"""

# name -> (weights of streams a and b, StreamingDataset arguments)
CASES: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {
    "unweighted": ([{}, {}], {}),
    "epoch_size": ([{}, {}], {"epoch_size": 123, "shuffle": True}),
    "proportions": ([{"proportion": 2}, {"proportion": 1}], {"epoch_size": 500, "shuffle": True}),
    "repeat and choose fixed": (
        [{"repeat": 1.5}, {"choose": 50}],
        {"sampling_method": "fixed", "sampling_granularity": 3},
    ),
    "choose shuffled": ([{"choose": 450}, {"repeat": 0.3}], {"shuffle": True, "shuffle_seed": 7}),
}

SINGLE: dict[str, dict[str, Any]] = {
    "stream_name default": {"stream_name": "stream", "stream_config": {"repeat": 2}},
    "stream_config choose": {"stream_config": {"choose": 77}},
}

# name -> (code, shardflow's class, a fragment of shardflow's message)
ERRORS: dict[str, tuple[str, type[BaseException], str]] = {
    "missing remote index.json": (
        "os.makedirs(root + '/empty', exist_ok=True)\n"
        "StreamingDataset(remote=root + '/empty', local=root + '/empty-cache')",
        IndexNotFoundError,
        "index.json does not exist",
    ),
    "local stream without index": (
        "os.makedirs(root + '/bare', exist_ok=True)\nStreamingDataset(local=root + '/bare')",
        NoShardsError,
        "recognises the folder, and the stream has no remote",
    ),
    "index without shards": (
        "os.makedirs(root + '/none', exist_ok=True)\n"
        "open(root + '/none/index.json', 'w').write('{\"version\": 2, \"shards\": []}')\n"
        "StreamingDataset(local=root + '/none')",
        NoShardsError,
        "lists no shards",
    ),
}


def _shardflow_namespace() -> dict[str, Any]:
    namespace: dict[str, Any] = {"Stream": Stream, "StreamingDataset": StreamingDataset}
    exec(COMMON, namespace)
    return namespace


SHARDFLOW = _shardflow_namespace()


@pytest.fixture(scope="module")
def remotes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Remotes ``a`` (300 samples, plain) and ``b`` (200 samples, zstd), a few shards each."""
    root = tmp_path_factory.mktemp("remotes")
    for name, count, compression in (("a", 300, None), ("b", 200, "zstd")):
        columns = {"id": "int", "text": "str"}
        with MDSWriter(
            out=str(root / name), columns=columns, compression=compression, size_limit=1500
        ) as out:
            for i in range(count):
                out.write({"id": i, "text": f"sample {i}"})
    return root


@pytest.fixture(scope="module")
def reference(reference_python: Path, remotes: Path) -> dict[str, Any]:
    """What the reference answers to every case, from one run of its venv."""
    cases = {
        "cases": CASES,
        "single": SINGLE,
        "errors": {name: code for name, (code, _, _) in ERRORS.items()},
    }
    script = COMMON + f"CASES = {cases!r}\n" + REFERENCE_MAIN
    out = remotes / "answers.pkl"
    result = subprocess.run(
        [str(reference_python), "-c", script, str(remotes), str(out)],
        capture_output=True, text=True, timeout=300, cwd=remotes,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    with out.open("rb") as f:
        return pickle.load(f)


@pytest.mark.parametrize("name", list(CASES))
def test_names_give_the_references_values(reference: dict[str, Any], remotes: Path, name: str) -> None:
    weights, kwargs = CASES[name]
    ours = SHARDFLOW["describe"](SHARDFLOW["build"](str(remotes), "sf-" + name, weights, kwargs))
    theirs = reference["cases"][name]
    assert set(ours) == set(theirs)
    for key in ("resample", "validate_weights"):
        got, want = ours.pop(key), theirs.pop(key)
        assert type(got) is type(want), key
        if key == "resample":
            assert list(got) == list(want)
            for at in want:
                assert_same(list(got[at]), list(want[at]), f"resample_streams{at}")
        else:
            assert got == want
    ours["weights"] = [list(w) for w in ours["weights"]]
    theirs["weights"] = [list(w) for w in theirs["weights"]]
    assert_same(ours, theirs, name)


@pytest.mark.parametrize("name", list(SINGLE))
def test_stream_name_and_config_are_the_references(
    reference: dict[str, Any], remotes: Path, name: str
) -> None:
    ours = SHARDFLOW["single"](str(remotes), "sf-single-" + name, SINGLE[name])
    assert_same(ours, reference["single"][name], name)


@pytest.mark.parametrize("name", list(ERRORS))
def test_errors_are_also_what_the_reference_raises(
    reference: dict[str, Any], remotes: Path, name: str
) -> None:
    code, ours, fragment = ERRORS[name]
    mro = reference["errors"][name]
    assert mro is not None, f"the reference raises nothing for {name!r}: not a case"
    err = SHARDFLOW["error_case"](code, str(remotes / "sf-errors"))
    assert isinstance(err, ours), f"{name}: shardflow raised {err!r}, expected its {ours.__name__}"
    assert fragment in str(err), f"{name}: shardflow's message changed: {err}"
    wanted = _builtin(mro)
    assert isinstance(err, wanted), f"{name}: {type(err).__name__} is no {wanted.__name__} (the reference's)"
