"""The error of shardflow.shuffle: a ``ValueError`` that names the argument, its value and what would work."""

from __future__ import annotations

__all__ = ["ShuffleError"]


class ShuffleError(ValueError):
    """An impossible sample-order request: a bad world shape, seed, resume point, weight or size."""
