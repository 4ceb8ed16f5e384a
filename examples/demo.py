"""shardflow demo: write a dataset, train on it through StreamingDataLoader, stop halfway, resume elsewhere.

Run it with ``hatch run demo:run`` (see README.md: a lean environment of its own); ``hatch run demo:run
--remote s3`` puts the dataset into a bucket of a moto S3 server that the demo starts on 127.0.0.1 and
stops at the end. The report goes to stdout, progress logs to stderr. Steps:

1. every MDS column type round-trips through a small dataset read back with ``StreamingDataset``;
2. ``--samples`` samples ``{id, x: 16 float32, y: class of x}`` are written as zstd shards to the remote;
3. a small classifier trains through ``StreamingDataLoader`` (shuffled, 2 workers, a fresh cache folder)
   for half of the epoch, then saves the loader's ``state_dict()``, the model and the optimizer;
4. a new process (this script with ``--resume-from``) loads them and finishes the epoch;
5. every sample id must have been seen exactly once over the two processes, or the demo exits with 1.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# torch, Pillow, tqdm and shardflow.dataset (numba) are imported where they are used, so that `--help`
# answers at once.
if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger("shardflow.demo")


def say(line: str) -> None:
    """One line of the demo's report, on stdout (progress and diagnostics are logged to stderr)."""
    print(line, flush=True)

BUCKET = "shardflow-demo"
FEATURES = 16
CLASSES = 4
TRAIN_COLUMNS = {"id": "int", "x": f"ndarray:float32:{FEATURES}", "y": "int"}

TYPE_COLUMNS = {
    "bytes": "bytes", "str": "str", "int": "int",
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
    "float16": "float16", "float32": "float32", "float64": "float64",
    "str_int": "str_int", "str_float": "str_float", "str_decimal": "str_decimal",
    "nd_any": "ndarray", "nd_dtype": "ndarray:int32", "nd_static": "ndarray:uint16:2,4",
    "pil": "pil", "jpeg": "jpeg", "png": "png",
    "list_pil": "list[pil]", "list_jpeg": "list[jpeg]", "list_png": "list[png]",
    "jpeg_array": "jpeg_array", "json": "json", "pkl": "pkl",
}
LOSSY = {"jpeg", "list_jpeg", "jpeg_array"}  # compared by image size only


# -- every column type -------------------------------------------------------------------------------


def make_image(i: int) -> Image.Image:
    """A small deterministic RGB image."""
    from PIL import Image

    pixels = (np.arange(16 * 12 * 3).reshape(12, 16, 3) * (i + 1) % 256).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def _jpeg_bytes(image: Image.Image) -> bytes:
    """``image`` as JPEG file bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def make_typed_sample(i: int) -> dict[str, Any]:
    """Sample ``i`` of the column-type dataset: one value for every column type."""
    image = make_image(i)
    return {
        "bytes": bytes([i % 256]) * (i % 7), "str": f"sample {i}", "int": i * 1_000_003,
        "int8": i % 100 - 50, "int16": i * 3, "int32": -i, "int64": i**3,
        "uint8": i % 256, "uint16": i, "uint32": i * 7, "uint64": i**4,
        "float16": i / 2, "float32": i / 3, "float64": i / 7,
        "str_int": 10**20 + i, "str_float": i / 4, "str_decimal": Decimal(i) / 8,
        "nd_any": np.arange(i % 5 + 1, dtype=np.float64), "nd_dtype": np.arange(3, dtype=np.int32) * i,
        "nd_static": np.full((2, 4), i, dtype=np.uint16),
        "pil": image, "jpeg": image, "png": image,
        "list_pil": [image] * (i % 3), "list_jpeg": [image] * (i % 2), "list_png": [image],
        "jpeg_array": [_jpeg_bytes(image)], "json": {"i": i, "even": i % 2 == 0}, "pkl": {"set": {i}},
    }


def same(got: Any, want: Any, lossy: bool = False) -> bool:
    """Whether a read value equals the written one (images of lossy columns: same size only)."""
    from PIL import Image

    if isinstance(want, Image.Image) or isinstance(want, bytes) and lossy:
        image = Image.open(io.BytesIO(want)) if isinstance(want, bytes) else want
        got_image = got if isinstance(got, Image.Image) else Image.open(io.BytesIO(got))
        return got_image.size == image.size and (lossy or got_image.tobytes() == image.tobytes())
    if isinstance(want, list):
        return len(got) == len(want) and all(same(g, w, lossy) for g, w in zip(got, want, strict=True))
    if isinstance(want, np.ndarray):
        return bool(got.dtype == want.dtype and np.array_equal(got, want))
    if isinstance(want, float):
        return math.isclose(float(got), want, rel_tol=1e-3)
    return bool(got == want)


def check_column_types(remote: str, cache: Path, samples: int = 100) -> None:
    """Write ``samples`` samples with every column type to ``remote`` and read them back by id."""
    from shardflow.dataset import StreamingDataset
    from shardflow.format import MDSWriter, get_mds_encodings

    started = time.perf_counter()
    with MDSWriter(out=remote, columns=TYPE_COLUMNS, compression="zstd", hashes=["sha1", "xxh64"],
                   size_limit=1 << 18) as writer:
        for i in range(samples):
            writer.write(make_typed_sample(i))
    dataset = StreamingDataset(remote=remote, local=str(cache), validate_hash="sha1", allow_unsafe_types=True)
    for i in range(dataset.size):
        sample, want = dataset[i], make_typed_sample(i)
        bad = [name for name in TYPE_COLUMNS if not same(sample[name], want[name], name in LOSSY)]
        if bad:
            raise SystemExit(f"sample {i} did not round-trip in columns {bad}")
    say(f"column types: {len(TYPE_COLUMNS)} columns ({len(get_mds_encodings())} MDS encodings) x "
        f"{dataset.size} samples in {len(dataset.shards)} shards round-trip "
        f"({time.perf_counter() - started:.2f} s)")


# -- the training data -------------------------------------------------------------------------------


def teacher() -> np.ndarray:
    """The fixed projection that labels the data: ``y = argmax(x @ W)``."""
    return np.random.default_rng(7).standard_normal((FEATURES, CLASSES)).astype(np.float32)


def write_train(remote: str, samples: int) -> None:
    """Write the training dataset to ``remote``."""
    from shardflow.format import MDSWriter

    rng = np.random.default_rng(0)
    weights = teacher()
    started = time.perf_counter()
    with MDSWriter(out=remote, columns=TRAIN_COLUMNS, compression="zstd", hashes=["xxh64"],
                   size_limit=1 << 17) as writer:
        for begin in range(0, samples, 1000):
            x = rng.standard_normal((min(1000, samples - begin), FEATURES)).astype(np.float32)
            for offset, (row, label) in enumerate(zip(x, (x @ weights).argmax(1).tolist(), strict=True)):
                writer.write({"id": begin + offset, "x": row, "y": label})
    say(f"wrote {samples} samples {{id: int, x: {FEATURES} float32, y: argmax(x @ W), one of {CLASSES} "
        f"classes}} to {remote} ({time.perf_counter() - started:.2f} s)")


def make_model() -> torch.nn.Module:
    """A small MLP classifier."""
    import torch

    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 32), torch.nn.ReLU(), torch.nn.Linear(32, CLASSES))


def accuracy(model: torch.nn.Module, samples: int = 4000) -> float:
    """Accuracy on fresh samples drawn like the training data."""
    import torch

    x = np.random.default_rng(1).standard_normal((samples, FEATURES)).astype(np.float32)
    y = torch.from_numpy((x @ teacher()).argmax(1))
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1) == y).float().mean())


# -- training halves ---------------------------------------------------------------------------------


def train(config: dict[str, Any], checkpoint: dict[str, Any] | None, stop_at: int | None) -> dict[str, Any]:
    """Train through a StreamingDataLoader from the epoch's start or ``checkpoint``, to ``stop_at`` samples.

    Returns the ids seen, the losses, the loader's state, the model and optimizer states and the timing.
    """
    import torch
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from shardflow.dataset import StreamingDataLoader, StreamingDataset

    torch.manual_seed(0)
    torch.set_num_threads(1)  # the DataLoader workers have the other cores
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch_size = config["batch_size"]
    constructed = time.perf_counter()
    dataset = StreamingDataset(
        remote=config["remote"], local=config["cache"], shuffle=True, batch_size=batch_size
    )
    loader = StreamingDataLoader(dataset, batch_size=batch_size, num_workers=config["workers"])
    start = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        loader.load_state_dict(checkpoint["loader"])
        start = checkpoint["loader"]["sample_in_epoch"]
    log.info("  %r: %d shards, epoch of %d samples", dataset, len(dataset.shards), len(dataset))
    ids: list[torch.Tensor] = []
    losses: list[float] = []
    seen = 0
    began = time.perf_counter()
    first_batch = None
    with logging_redirect_tqdm(), tqdm(total=len(dataset), initial=start, unit="sample", disable=None,
                                       leave=False) as progress:
        for batch in loader:
            loss = torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if first_batch is None:
                first_batch = time.perf_counter() - constructed
            ids.append(batch["id"])
            losses.append(loss.item())
            seen += len(batch["id"])
            progress.update(len(batch["id"]))
            if len(losses) % 20 == 0:
                loss_now = np.mean(losses[-20:])
                log.info("  batch %4d  samples %6d  loss %.3f", len(losses), start + seen, loss_now)
            if stop_at is not None and start + seen >= stop_at:
                break
    seconds = time.perf_counter() - began
    return {
        "ids": torch.cat(ids).numpy(),
        "losses": losses,
        "loader": loader.state_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "seconds": seconds,
        "first_batch": first_batch,
        "accuracy": accuracy(model),
    }


def report(name: str, half: dict[str, Any]) -> None:
    """Report a half's throughput and loss."""
    losses, samples, seconds = half["losses"], len(half["ids"]), half["seconds"]
    say(f"{name}: {samples} samples in {len(losses)} batches, {seconds:.2f} s, {samples / seconds:.0f} "
        f"samples/s; loss {np.mean(losses[:10]):.3f} -> {np.mean(losses[-10:]):.3f}; "
        f"accuracy {100 * half['accuracy']:.1f}%; first batch {half['first_batch']:.2f} s after the "
        f"dataset's construction")


def check_exactly_once(first: np.ndarray, second: np.ndarray, samples: int) -> bool:
    """Whether ids ``0..samples-1`` were each seen exactly once over both halves; report what went wrong."""
    counts = np.bincount(np.concatenate([first, second]), minlength=samples)
    missing, repeated = int((counts == 0).sum()), int((counts > 1).sum())
    both = np.intersect1d(first, second).size
    if len(counts) == samples and missing == 0 and repeated == 0:
        say(f"exactly once: all {samples} sample ids seen once ({len(first)} before the stop, "
            f"{len(second)} after)")
        return True
    say(f"NOT exactly once: {missing} ids missing, {repeated} seen more than once ({both} in both halves), "
        f"{len(counts) - samples} unknown ids")
    return False


# -- the S3 server -----------------------------------------------------------------------------------


def start_moto(workdir: Path) -> subprocess.Popen[bytes]:
    """Start moto's S3 server on a free port of 127.0.0.1, point boto3 at it, create the bucket."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    script = Path(sys.executable).with_name("moto_server")
    command = [str(script) if script.exists() else "moto_server", "-H", "127.0.0.1", "-p", str(port)]
    with open(workdir / "moto.log", "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise SystemExit(f"moto_server did not start: {(workdir / 'moto.log').read_text()}") from None
            time.sleep(0.1)
    # Child processes (DataLoader workers, the resumed run) inherit these.
    os.environ.update({
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    })
    import boto3

    boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"]).create_bucket(Bucket=BUCKET)
    log.info("moto S3 server on 127.0.0.1:%d (pid %d), bucket s3://%s", port, server.pid, BUCKET)
    return server


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop a server started by :func:`start_moto`."""
    server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(10)


# -- the two processes -------------------------------------------------------------------------------


def resume(checkpoint_path: Path) -> None:
    """The second process: load the checkpoint, finish the epoch, save the result beside it."""
    import torch

    checkpoint = torch.load(checkpoint_path, weights_only=False)
    config = checkpoint["config"]
    log.info("resumed in pid %d from %s: %s", os.getpid(), checkpoint_path.name, checkpoint["loader"])
    result = train(config, checkpoint, None)
    torch.save(result, checkpoint_path.with_name("second-half.pt"))


def run(args: argparse.Namespace, workdir: Path) -> bool:
    """The first process: write the data, train half an epoch, resume in a new process, check the ids."""
    import torch

    if args.remote == "s3":
        root = f"s3://{BUCKET}"
    else:
        root = str(workdir / "remote")
    say(f"shardflow demo: remote {root}, cache {workdir / 'cache'}")
    check_column_types(f"{root}/types", workdir / "cache" / "types")
    write_train(f"{root}/train", args.samples)
    config = {
        "remote": f"{root}/train",
        "cache": str(workdir / "cache" / "train"),
        "batch_size": args.batch_size,
        "workers": args.workers,
    }
    log.info("first half: StreamingDataLoader(StreamingDataset(shuffle=True, batch_size=%d), num_workers=%d)",
             args.batch_size, args.workers)
    first = train(config, None, args.samples // 2)
    report("first half", first)
    checkpoint_path = workdir / "checkpoint.pt"
    torch.save({"config": config, **{k: first[k] for k in ("loader", "model", "optimizer")}}, checkpoint_path)
    say(f"stopped after {len(first['ids'])} samples; saved loader.state_dict(), the model and the optimizer "
        f"to {checkpoint_path.name}; resuming in a new process")
    log.info("loader.state_dict(): %s", first["loader"])
    resumed = subprocess.run([sys.executable, __file__, "--resume-from", str(checkpoint_path)])
    if resumed.returncode:
        log.error("the resumed process exited with %d", resumed.returncode)
        return False
    second = torch.load(workdir / "second-half.pt", weights_only=False)
    report("second half", second)
    return check_exactly_once(first["ids"], second["ids"], args.samples)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--remote", choices=["local", "s3"], default="local",
                        help="where the dataset lives: a local folder, or a bucket of a moto S3 server")
    parser.add_argument("--samples", type=int, default=40_000, help="samples in the training dataset")
    parser.add_argument("--batch-size", type=int, default=256, help="samples per batch")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--workdir", type=Path,  # "%(default).0s": no "(default: None)" appended
                        help="keep the remote, cache and checkpoint here (default: a temporary folder, "
                        "removed at the end)%(default).0s")
    parser.add_argument("--resume-from", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    if args.resume_from is not None:
        resume(args.resume_from)
        return
    started = time.perf_counter()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="shardflow-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    server = start_moto(workdir) if args.remote == "s3" else None
    try:
        ok = run(args, workdir)
    finally:
        if server is not None:
            stop(server)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    say(f"demo {'passed' if ok else 'FAILED'} in {time.perf_counter() - started:.1f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
