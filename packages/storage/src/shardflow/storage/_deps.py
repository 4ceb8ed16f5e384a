"""Lazy imports of the cloud SDKs, with an error that names the extra to install."""

# mirrors shardflow.format's optional-import helper (shardflow.format._deps.require); the packages may not
# import each other

from __future__ import annotations

import importlib
from types import ModuleType

from shardflow.storage.errors import MissingDependencyError

__all__ = ["require"]

# The distribution each extra of shardflow-storage installs.
_EXTRA_PACKAGES = {
    "s3": "boto3",
    "gcs": "google-cloud-storage",
    "azure": "azure-storage-blob",
    "oci": "oci",
    "hf": "huggingface_hub",
    "databricks": "databricks-sdk",
    "sftp": "paramiko",
}


def require(module: str, *, scheme: str, extra: str) -> ModuleType:
    """Import ``module`` or explain which extra brings it.

    Args:
        module: The module to import, e.g. ``"boto3"``.
        scheme: The URL scheme that needs it, for the message.
        extra: The ``shardflow-storage`` extra that installs it (``s3``, ``gcs``, ``azure``, ``oci``, ``hf``,
            ``databricks``, ``sftp``).

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: When the module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = _EXTRA_PACKAGES.get(extra, module)
        raise MissingDependencyError(
            f"{scheme}:// URLs need {package}, which is not installed (import of {module} failed: {exc}). "
            f"Install it with: pip install 'shardflow-storage[{extra}]'"
        ) from exc
