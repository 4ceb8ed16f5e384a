"""The version shared by every shardflow distribution."""

__version__ = "0.1.0"
