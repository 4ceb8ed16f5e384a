"""WebDataset tars and LitData folders streamed from S3 (moto's server on 127.0.0.1) with no conversion:
the stream finds no MDS index, detects the source, builds its index (tar headers through ranged reads;
LitData's own ``index.json``), and every StreamingDataset feature works: 2 ranks x 2 workers see every
sample once, equal to the source, and a state saved there resumes exactly on another world shape.

Ranks are real processes (``_dataset_rank.py``: a gloo process group over TCP on 127.0.0.1), each with a
2-worker StreamingDataLoader that collates nothing; the ranks of a run share one cache folder, as the ranks
of a node do, and reach moto through ``S3_ENDPOINT_URL`` and the credentials in their environment. Each
rank pickles the samples it yielded for the test to compare with the source. Rank 0 saves its state
mid-epoch; a run of another world shape that loads it must read exactly the rest of the epoch: its global
steps (every rank's ``s``-th batch) equal the whole run's from that step on.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ._dataset_rank import kept_batches, run_node
from .test_distributed import global_steps

sys.path.insert(0, str(Path(__file__).parent.parent / "storage"))  # the storage tests' server helpers
sys.path.insert(0, str(Path(__file__).parent.parent / "format"))  # the LitData writer

from _litdata_inputs import SAMPLES as LITDATA_SAMPLES  # noqa: E402
from _litdata_inputs import same, write_litdata_folders  # noqa: E402
from _storage_servers import BUCKET, ServerProcess, moto_bucket, upload_folder  # noqa: E402
from _storage_servers import MOTO_CREDENTIALS as CREDENTIALS  # noqa: E402

TARS, PER_TAR = 3, 40
LITDATA = ("zstd_batch", "zstd_chunk")
GLOBAL_BATCH = 12  # batch_size x ranks: what a resumed run keeps (the epoch is laid out in global batches)
STOP = 3  # the global step after which rank 0 saves its state


def tar_sample(i: int) -> dict[str, Any]:
    """Sample ``i`` as written into the tars."""
    sample: dict[str, Any] = {"__key__": f"s{i:05d}", "txt": f"text {i}", "cls": i % 7}
    if i % 5 == 0:
        sample["jpg"] = bytes(range(256)) * (i % 3 + 1)
    return sample


def write_tars(folder: Path) -> Path:
    """The tars, written by the webdataset library's TarWriter, or in its layout by tarfile without it."""
    folder.mkdir(parents=True)
    for t in range(TARS):
        samples = [tar_sample(i) for i in range(t * PER_TAR, (t + 1) * PER_TAR)]
        try:
            import webdataset

            with webdataset.TarWriter(str(folder / f"part-{t:03d}.tar")) as writer:
                for sample in samples:
                    writer.write(sample)
        except ImportError:
            import io
            import tarfile

            with tarfile.open(folder / f"part-{t:03d}.tar", "w", format=tarfile.PAX_FORMAT) as tar:
                for sample in samples:
                    for field, value in sample.items():
                        if field != "__key__":
                            data = value if isinstance(value, bytes) else str(value).encode()
                            info = tarfile.TarInfo(f"{sample['__key__']}.{field}")
                            info.size, info.mode = len(data), 0o444
                            tar.addfile(info, io.BytesIO(data))
    return folder


def stored(i: int) -> dict[str, Any]:
    """What a reader gives for tar sample ``i``: every field's bytes, and the tar's URL."""
    sample = {
        key: value if isinstance(value, bytes) else str(value).encode()
        for key, value in tar_sample(i).items()
    }
    sample["__key__"] = tar_sample(i)["__key__"]
    sample["__url__"] = f"s3://{BUCKET}/wds/part-{i // PER_TAR:03d}.tar"
    return sample


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Any]]:
    """moto's S3 server; ``wds/`` holds the tars."""
    with moto_bucket(tmp_path_factory.mktemp("moto")) as (server, client):
        upload_folder(client, write_tars(tmp_path_factory.mktemp("wds") / "wds"), "wds")
        yield server, client


@pytest.fixture(scope="module")
def litdata_remote(
    moto: tuple[ServerProcess, Any], reference_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[Any]:
    """``lit-zstd_batch/`` and ``lit-zstd_chunk/`` written by ``litdata.optimize`` (zstd at its default level,
    frames of items, and whole-file chunks, which the cache inflates); returns what LitData reads (the same
    samples in both)."""
    folders = write_litdata_folders(reference_python, tmp_path_factory.mktemp("litdata"), variants=LITDATA)
    for variant in LITDATA:
        upload_folder(moto[1], folders / variant, f"lit-{variant}")
    return list(pickle.loads((folders / f"{LITDATA[0]}.pkl").read_bytes()))


def rank_env(server: ServerProcess) -> dict[str, object]:
    """What a rank process needs to reach moto."""
    return {"S3_ENDPOINT_URL": server.endpoint, **CREDENTIALS}


def config(
    prefix: str, cache: Path, ranks: int, workers: int, id_key: str, **extra: object
) -> dict[str, Any]:
    """A rank's config: ``s3://BUCKET/prefix`` (its source detected) shuffled, in global batches of
    GLOBAL_BATCH, each sample's ``id_key`` reported and every batch kept."""
    where = {"remote": f"s3://{BUCKET}/{prefix}", "local": str(cache)}
    loader = {"batch_size": GLOBAL_BATCH // ranks, "workers": workers, "collate": "list"}
    return {**where, **loader, "id_key": id_key, "keep_samples": True, **extra}


def samples(reports: list[dict]) -> list[dict[str, Any]]:
    """Every sample the ranks yielded."""
    return [sample for report in reports for batch in kept_batches(report) for sample in batch["samples"]]


def steps(reports: list[dict]) -> list[list[Any]]:
    """The run's global steps, each sorted (the ranks' order within a step differs between world shapes)."""
    return [sorted(step) for step in global_steps(reports)]


@pytest.fixture(scope="module")
def wds_run(
    moto: tuple[ServerProcess, Any], tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[dict], Path]:
    """2 ranks x 2 workers read the tars' epoch whole (rank 0 saves its state after STOP steps); their
    reports and shared cache folder."""
    folder = tmp_path_factory.mktemp("wds-run")
    make = config("wds", folder / "cache", 2, 2, "__key__", state_at=STOP)
    return run_node(make, 2, folder, rank_env(moto[0])), folder / "cache"


@pytest.fixture(scope="module")
def litdata_runs(
    moto: tuple[ServerProcess, Any], litdata_remote: list, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], list[dict]]:
    """The reports of 2 ranks x 2 workers reading a LitData variant's epoch whole (rank 0 saves its state
    after STOP - 1 steps), run once per variant."""
    runs: dict[str, list[dict]] = {}

    def run(variant: str) -> list[dict]:
        if variant not in runs:
            folder = tmp_path_factory.mktemp(f"lit-{variant}")
            make = config(f"lit-{variant}", folder / "cache", 2, 2, "id", state_at=STOP - 1)
            runs[variant] = run_node(make, 2, folder, rank_env(moto[0]))
        return runs[variant]

    return run


def test_webdataset_tars_two_ranks_two_workers_every_sample_once(wds_run: tuple[list[dict], Path]) -> None:
    reports, cache = wds_run
    got = samples(reports)
    by_key = {sample["__key__"]: sample for sample in got}
    assert len(got) == len(by_key) == TARS * PER_TAR, "every sample once"
    assert all(by_key[f"s{i:05d}"] == stored(i) for i in range(TARS * PER_TAR)), "equal to the source"
    assert sorted(path.name for path in cache.glob("*.tar")) == [f"part-{t:03d}.tar" for t in range(TARS)]


def test_webdataset_tars_resume_mid_epoch_on_another_world(
    wds_run: tuple[list[dict], Path], moto: tuple[ServerProcess, Any], tmp_path: Path
) -> None:
    whole, _ = wds_run
    assert whole[0]["state"]["sample_in_epoch"] == STOP * GLOBAL_BATCH
    make = config("wds", tmp_path / "cache", 1, 3, "__key__")  # 1 rank x 3 workers
    rest = run_node(make, 1, tmp_path, rank_env(moto[0]), state=whole[0]["state"])
    assert steps(rest) == steps(whole)[STOP:], "exactly the rest of the epoch, step by step"
    assert all(sample == stored(int(sample["__key__"][1:])) for sample in samples(rest)), (
        "equal to the source"
    )


@pytest.mark.parametrize("variant", LITDATA)
def test_litdata_folder_two_ranks_two_workers_every_sample_once(
    litdata_runs: Callable[[str], list[dict]], litdata_remote: list, variant: str
) -> None:
    got = samples(litdata_runs(variant))
    assert sorted(sample["id"] for sample in got) == list(range(LITDATA_SAMPLES)), "every sample once"
    for sample in got:
        expected = litdata_remote[sample["id"]]
        assert same(sample, expected), f"sample {sample['id']}: {sample!r} != {expected!r}"


def test_litdata_folder_resumes_mid_epoch_on_another_world(
    litdata_runs: Callable[[str], list[dict]], moto: tuple[ServerProcess, Any], litdata_remote: list,
    tmp_path: Path,
) -> None:  # fmt: skip
    whole = litdata_runs("zstd_chunk")
    assert whole[0]["state"]["sample_in_epoch"] == (STOP - 1) * GLOBAL_BATCH
    make = config("lit-zstd_chunk", tmp_path / "cache", 1, 1, "id")  # 1 rank x 1 worker
    rest = run_node(make, 1, tmp_path, rank_env(moto[0]), state=whole[0]["state"])
    assert steps(rest) == steps(whole)[STOP - 1 :], "exactly the rest of the epoch, step by step"
    assert all(same(sample, litdata_remote[sample["id"]]) for sample in samples(rest)), "equal to the source"
