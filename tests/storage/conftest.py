"""Session fixtures of the storage tests: one real server per store on 127.0.0.1, stopped at the end."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the _storage_* helper modules beside this file

from _storage_oci_server import FakeObjectStorage  # noqa: E402
from _storage_servers import (  # noqa: E402
    BUCKET,
    ServerProcess,
    moto_client,
    oci_test_config,
    start_azurite,
    start_gcs_emulator,
    start_moto,
)

OCI_NAMESPACE = "testns"


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def moto_server(servers_dir: Path) -> Iterator[ServerProcess]:
    """moto's S3 server, with the bucket ``shardflow-test``."""
    server = start_moto(servers_dir)
    try:
        moto_client(server.endpoint).create_bucket(Bucket=BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def gcs_server(servers_dir: Path) -> Iterator[ServerProcess]:
    """gcp-storage-emulator, with the bucket ``shardflow-test``."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    server = start_gcs_emulator(servers_dir)
    try:
        storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": server.endpoint},
        ).create_bucket(BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def azure_server(servers_dir: Path) -> Iterator[ServerProcess]:
    """Azurite's blob service, with the container ``shardflow-test``."""
    from azure.storage.blob import BlobServiceClient

    server = start_azurite(servers_dir)
    try:
        BlobServiceClient.from_connection_string(server.extra["connection_string"]).create_container(BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def oci_server(servers_dir: Path) -> Iterator[FakeObjectStorage]:
    """The loopback OCI Object Storage stand-in, with the bucket ``shardflow-test`` in ``testns``."""
    server = FakeObjectStorage(OCI_NAMESPACE, (BUCKET,)).start()
    server.config = oci_test_config(servers_dir)  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


# -- how to reach each store ---------------------------------------------------------------------------

from _storage_targets import Target  # noqa: E402


@pytest.fixture(scope="session")
def local_target(tmp_path_factory: pytest.TempPathFactory) -> Target:
    root = str(tmp_path_factory.mktemp("local-store"))
    return Target("local", root, None, lambda endpoint: {})


@pytest.fixture(scope="session")
def s3_target(moto_server: ServerProcess) -> Target:
    def options(endpoint: str | None) -> dict[str, object]:
        return {
            "endpoint_url": endpoint or moto_server.endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": "test",
            "aws_secret_access_key": "test",
        }

    return Target("s3", f"s3://{BUCKET}", moto_server.port, options)


@pytest.fixture(scope="session")
def gcs_target(gcs_server: ServerProcess) -> Target:
    def options(endpoint: str | None) -> dict[str, object]:
        return {"endpoint_url": endpoint or gcs_server.endpoint, "anonymous": True, "project": "test"}

    return Target("gcs", f"gs://{BUCKET}", gcs_server.port, options, paginates=False)


@pytest.fixture(scope="session")
def azure_target(azure_server: ServerProcess) -> Target:
    def options(endpoint: str | None) -> dict[str, object]:
        blob_endpoint = f"{endpoint or azure_server.endpoint}/devstoreaccount1"
        connection = azure_server.extra["connection_string"].replace(
            f"BlobEndpoint={azure_server.endpoint}/devstoreaccount1", f"BlobEndpoint={blob_endpoint}"
        )
        return {"connection_string": connection}

    return Target("azure", f"azure://{BUCKET}", azure_server.port, options)


@pytest.fixture(scope="session")
def oci_target(oci_server: FakeObjectStorage) -> Target:
    def options(endpoint: str | None) -> dict[str, object]:
        return {"config": oci_server.config, "endpoint_url": endpoint or oci_server.endpoint}  # type: ignore

    return Target("oci", f"oci://{BUCKET}@{OCI_NAMESPACE}", oci_server.port, options)


REMOTE_TARGETS = ("s3_target", "gcs_target", "azure_target", "oci_target")


@pytest.fixture(params=REMOTE_TARGETS, ids=lambda name: name.removesuffix("_target"))
def remote_target(request: pytest.FixtureRequest) -> Target:
    """Each remote store in turn."""
    target: Target = request.getfixturevalue(request.param)
    return target
