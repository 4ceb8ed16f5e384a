"""The built-in backends: local files, S3, GCS, Azure Blob and OCI Object Storage (each imported on use)."""

__all__: list[str] = []
