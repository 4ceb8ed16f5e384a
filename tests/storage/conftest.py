"""Session fixtures of the storage tests: one real server per store on 127.0.0.1, stopped at the end."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


HUB_REPO = "shardflow/test-data"
HUB_TOKEN = "hf_shardflow_test_token"
DATABRICKS_TOKEN = "dapi-shardflow-test"
SFTP_USER = "tester"


@pytest.fixture(scope="session")
def hub_server() -> Iterator[Any]:
    """The loopback Hugging Face Hub stand-in, with the dataset repository ``shardflow/test-data``."""
    pytest.importorskip("huggingface_hub")
    from _hub_server import FakeHub

    server = FakeHub((HUB_REPO,), token=HUB_TOKEN).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def hf_target(hub_server: Any) -> Target:
    def options(endpoint: str | None) -> dict[str, object]:
        return {"endpoint": endpoint or hub_server.endpoint, "token": HUB_TOKEN}

    return Target("hf", f"hf://datasets/{HUB_REPO}", hub_server.port, options)


@pytest.fixture(scope="session")
def databricks_server() -> Iterator[Any]:
    """The loopback Databricks workspace stand-in (Files API and DBFS API)."""
    pytest.importorskip("databricks.sdk")
    from _dbfs_server import FakeWorkspace

    server = FakeWorkspace(DATABRICKS_TOKEN).start()
    try:
        yield server
    finally:
        server.stop()


def _databricks_options(server: Any) -> Any:
    def options(endpoint: str | None) -> dict[str, object]:
        return {"host": endpoint or server.endpoint, "token": DATABRICKS_TOKEN}

    return options


@pytest.fixture(scope="session")
def volumes_target(databricks_server: Any) -> Target:
    root = "dbfs:/Volumes/main/default/shardflow-test"
    return Target("volumes", root, databricks_server.port, _databricks_options(databricks_server))


@pytest.fixture(scope="session")
def dbfs_target(databricks_server: Any) -> Target:
    options = _databricks_options(databricks_server)
    return Target(
        "dbfs", "dbfs:/shardflow-test", databricks_server.port, options, paginates=False
    )  # one page


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An SSH server on 127.0.0.1 serving SFTP over a temporary folder, for the user ``tester``."""
    pytest.importorskip("paramiko")
    from _sftp_server import SFTPTestServer, write_key_files

    folder = tmp_path_factory.mktemp("sftp")
    (folder / "root").mkdir()
    host_key, user_key, private = write_key_files(folder)
    server = SFTPTestServer(folder / "root", SFTP_USER, host_key, user_key).start()
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(server.known_hosts_line())
    server.client_options = {"key_filename": str(private), "known_hosts": str(known_hosts)}
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sftp_target(sftp_server: Any) -> Target:
    return Target(
        "sftp",
        f"sftp://{SFTP_USER}@127.0.0.1:{sftp_server.port}/shardflow-test",
        sftp_server.port,
        lambda endpoint: dict(sftp_server.client_options),
        paginates=False,
    )


# Stores reached over HTTP, which the fault proxy can stand in front of (SFTP has tests of its own).
REMOTE_TARGETS = (
    "s3_target",
    "gcs_target",
    "azure_target",
    "oci_target",
    "hf_target",
    "volumes_target",
    "dbfs_target",
)


@pytest.fixture(params=REMOTE_TARGETS, ids=lambda name: name.removesuffix("_target"))
def remote_target(request: pytest.FixtureRequest) -> Target:
    """Each remote store in turn."""
    target: Target = request.getfixturevalue(request.param)
    return target
