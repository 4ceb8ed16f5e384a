"""WebDataset tars and LitData folders streamed from S3 (moto's server on 127.0.0.1) with no conversion:
the stream finds no MDS index, detects the source, builds its index (tar headers through ranged reads;
LitData's own ``index.json``), and every StreamingDataset feature works: 2 ranks x 2 workers see every
sample once, equal to the source, and a state saved there resumes exactly on another world shape.

Ranks are ``World(...)`` overrides in this process, one after the other, each with a 2-worker
StreamingDataLoader; they share one cache folder, as the ranks of a node do.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shardflow.dataset import StreamingDataLoader, StreamingDataset, World

sys.path.insert(0, str(Path(__file__).parent.parent / "storage"))  # the storage tests' server helpers
sys.path.insert(0, str(Path(__file__).parent.parent / "format"))  # the LitData writer

from _litdata_inputs import SAMPLES as LITDATA_SAMPLES  # noqa: E402
from _litdata_inputs import same, write_litdata_folders  # noqa: E402
from _storage_servers import BUCKET, ServerProcess, moto_bucket, upload_folder  # noqa: E402
from _storage_servers import MOTO_CREDENTIALS as CREDENTIALS  # noqa: E402

TARS, PER_TAR = 3, 40
LITDATA = ("zstd_batch", "zstd_chunk")
GLOBAL_BATCH = 12  # batch_size x ranks: what a resumed run keeps (the epoch is laid out in global batches)


def as_list(batch: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Collate nothing (samples hold bytes and arrays of several shapes), in a mapping whose first value's
    length the loader counts as the batch's samples."""
    return {"samples": batch}


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


@pytest.fixture
def s3_env(moto: tuple[ServerProcess, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_ENDPOINT_URL", moto[0].endpoint)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


def run_ranks(
    remote: str, cache: Path, ranks: int, workers: int, stop: int | None = None, state: dict | None = None
) -> tuple[list[dict[str, Any]], dict | None]:
    """Every rank's samples (the first ``stop`` batches of each when given) and rank 0's state."""
    samples: list[dict[str, Any]] = []
    saved = None
    per_rank = GLOBAL_BATCH // ranks
    for rank in range(ranks):
        world = World(rank=rank, world_size=ranks, local_rank=rank, local_world_size=ranks)
        dataset = StreamingDataset(
            remote=remote,
            local=str(cache),
            shuffle=True,
            batch_size=per_rank,
            num_canonical_nodes=2,
            world=world,
        )
        loader = StreamingDataLoader(dataset, batch_size=per_rank, num_workers=workers, collate_fn=as_list)
        if state is not None:
            loader.load_state_dict(state)
        for k, batch in enumerate(loader):
            samples += batch["samples"]
            if stop is not None and k + 1 == stop:
                if rank == 0:
                    saved = loader.state_dict()
                break
    return samples, saved


@pytest.mark.usefixtures("s3_env")
def test_webdataset_tars_two_ranks_two_workers_every_sample_once(tmp_path: Path) -> None:
    samples, _ = run_ranks(f"s3://{BUCKET}/wds", tmp_path / "cache", ranks=2, workers=2)
    by_key = {sample["__key__"]: sample for sample in samples}
    assert len(samples) == len(by_key) == TARS * PER_TAR, "every sample once"
    assert all(by_key[f"s{i:05d}"] == stored(i) for i in range(TARS * PER_TAR)), "equal to the source"
    assert sorted(path.name for path in (tmp_path / "cache").glob("*.tar")) == [
        f"part-{t:03d}.tar" for t in range(TARS)
    ]


@pytest.mark.usefixtures("s3_env")
def test_webdataset_tars_resume_mid_epoch_on_another_world(tmp_path: Path) -> None:
    first, state = run_ranks(f"s3://{BUCKET}/wds", tmp_path / "a", ranks=2, workers=2, stop=3)
    assert state is not None and state["sample_in_epoch"] == 3 * GLOBAL_BATCH
    rest, _ = run_ranks(f"s3://{BUCKET}/wds", tmp_path / "b", ranks=1, workers=1, state=state)
    keys = sorted(sample["__key__"] for sample in first + rest)
    assert keys == [f"s{i:05d}" for i in range(TARS * PER_TAR)], "the rest of the epoch, exactly"


@pytest.mark.usefixtures("s3_env")
@pytest.mark.parametrize("variant", LITDATA)
def test_litdata_folder_two_ranks_two_workers_every_sample_once(
    tmp_path: Path, litdata_remote: list, variant: str
) -> None:
    samples, _ = run_ranks(f"s3://{BUCKET}/lit-{variant}", tmp_path / "cache", ranks=2, workers=2)
    assert sorted(sample["id"] for sample in samples) == list(range(LITDATA_SAMPLES)), "every sample once"
    for sample in samples:
        expected = litdata_remote[sample["id"]]
        assert same(sample, expected), f"sample {sample['id']}: {sample!r} != {expected!r}"


@pytest.mark.usefixtures("s3_env")
def test_litdata_folder_resumes_mid_epoch_on_another_world(tmp_path: Path, litdata_remote: list) -> None:
    first, state = run_ranks(f"s3://{BUCKET}/lit-zstd_chunk", tmp_path / "a", ranks=2, workers=2, stop=2)
    assert state is not None and state["sample_in_epoch"] == 2 * GLOBAL_BATCH
    rest, _ = run_ranks(f"s3://{BUCKET}/lit-zstd_chunk", tmp_path / "b", ranks=1, workers=1, state=state)
    assert sorted(sample["id"] for sample in first + rest) == list(range(LITDATA_SAMPLES))
