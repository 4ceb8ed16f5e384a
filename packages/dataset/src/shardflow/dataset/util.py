"""Helpers that scripts written for mosaicml-streaming call, under the same names."""

from __future__ import annotations

import logging

__all__ = ["clean_stale_shared_memory"]

logger = logging.getLogger(__name__)


def clean_stale_shared_memory() -> None:
    """Do nothing: shardflow keeps no named shared memory, so a crashed run leaves none behind.

    mosaicml-streaming's ``streaming.base.util.clean_stale_shared_memory()`` removes the shared-memory
    blocks a killed job leaked; scripts call it before building a dataset. Here it is safe to call and
    to leave out. (The lock files of a cache folder are ``flock`` locks, which the kernel releases when
    their holder dies.)
    """
    logger.debug("clean_stale_shared_memory: nothing to clean, shardflow keeps no named shared memory")
