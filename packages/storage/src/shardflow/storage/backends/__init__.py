"""The built-in backends, each imported on first use: local, S3, GCS, Azure, OCI, hf, dbfs, sftp."""

__all__: list[str] = []
