"""Real object-store servers for the storage tests, each on a free port of 127.0.0.1: moto, GCS, Azurite.

moto's server stands in for S3, gcp-storage-emulator for GCS and Azurite for Azure Blob (OCI's stand-in
lives in ``_storage_oci_server``). Every server is a child process stopped by its own process id.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "free_port",
    "ServerProcess",
    "start_moto",
    "moto_client",
    "start_gcs_emulator",
    "start_azurite",
    "azurite_bin",
    "oci_test_config",
    "AZURITE_KEY",
    "BUCKET",
]

BUCKET = "shardflow-test"

# Azurite's documented, public development account key.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServerProcess:
    """A server started as a child process, stopped by its own process id."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}: {self.log.read_text()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not listen on 127.0.0.1:{self.port} within {timeout} s: {self.log.read_text()}"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _spawn(name: str, command: list[str], port: int, workdir: Path) -> ServerProcess:
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True
        )
    return ServerProcess(name, port, process, log).wait_ready()


def _script(name: str) -> str:
    """A console script installed beside this interpreter."""
    found = Path(sys.executable).with_name(name)
    if not found.exists():
        raise RuntimeError(
            f"{name} is not installed in {sys.prefix}: pip install 'moto[server]' gcp-storage-emulator"
        )
    return str(found)


def start_moto(workdir: Path) -> ServerProcess:
    port = free_port()
    return _spawn("moto", [_script("moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, workdir)


MOTO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}
"""The environment that points boto3 (and shardflow's S3 backend) at moto's test account."""


def moto_client(endpoint: str) -> Any:
    """A boto3 S3 client of the moto server at ``endpoint`` (its test credentials and region)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=MOTO_CREDENTIALS["AWS_DEFAULT_REGION"],
        aws_access_key_id=MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


@contextmanager
def moto_bucket(workdir: Path) -> Iterator[tuple[ServerProcess, Any]]:
    """A moto server with the test bucket :data:`BUCKET` made, and a client of it; stopped on exit."""
    server = start_moto(workdir)
    try:
        client = moto_client(server.endpoint)
        client.create_bucket(Bucket=BUCKET)
        yield server, client
    finally:
        server.stop()


def upload_folder(client: Any, folder: Path, prefix: str) -> None:
    """Upload every file of ``folder`` to ``prefix/<name>`` in :data:`BUCKET`."""
    for path in sorted(folder.iterdir()):
        client.upload_file(str(path), BUCKET, f"{prefix}/{path.name}")


def start_gcs_emulator(workdir: Path) -> ServerProcess:
    port = free_port()
    command = [
        _script("gcp-storage-emulator"),
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--in-memory",
        "--quiet",
    ]
    return _spawn("gcs", command, port, workdir)


def azurite_bin() -> Path:
    """Azurite's blob server script, installed with npm into a cache folder on first use.

    The folder is ``$SHARDFLOW_AZURITE_DIR``, default ``~/.cache/shardflow-azurite``.
    """
    folder = Path(os.environ.get("SHARDFLOW_AZURITE_DIR", Path.home() / ".cache" / "shardflow-azurite"))
    script = folder / "node_modules" / ".bin" / "azurite-blob"
    if script.exists():
        return script
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "Azurite needs Node.js and npm (apt-get install nodejs npm), then: "
            f"npm install --prefix {folder} azurite"
        )
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", "azurite"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return script


def start_azurite(workdir: Path) -> ServerProcess:
    port = free_port()
    command = [
        str(azurite_bin()),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--inMemoryPersistence",
        "--silent",
        "--skipApiVersionCheck",
        "--disableTelemetry",
        "--loose",
    ]
    server = _spawn("azurite", command, port, workdir)
    server.extra["connection_string"] = (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    return server


def oci_test_config(workdir: Path) -> dict[str, str]:
    """An oci config that ``oci.config.validate_config`` accepts, with a freshly generated RSA key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = Path(tempfile.mkdtemp(dir=workdir)) / "oci_api_key.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return {
        "user": "ocid1.user.oc1..aaaaaaaatest",
        "tenancy": "ocid1.tenancy.oc1..aaaaaaaatest",
        "fingerprint": "12:34:56:78:9a:bc:de:f0:12:34:56:78:9a:bc:de:f0",
        "region": "us-ashburn-1",
        "key_file": str(key_file),
    }
