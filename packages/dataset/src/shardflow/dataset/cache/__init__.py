"""shardflow.dataset.cache: the local shard cache shared by a node's processes. Never imports torch.

- :mod:`.layout`: the on-disk contract (folder names, lock, entry and tombstone paths, the limit and remote
  markers) and readers of its files;
- :mod:`.locks`: ``flock`` lock files, waited for with a timeout, tried, or probed;
- :mod:`.budget`: :class:`NodeCache`, one byte budget over a dataset's cache folders, and eviction;
- :mod:`.fill`: filling a folder with a shard (lock, stale temporary files, reserve, download, open, record);
- :mod:`.report`: :func:`cache_status` and :func:`cache_clean`, what ``shardflow cache`` prints.
"""

from shardflow.dataset.cache.budget import NodeCache, footprint
from shardflow.dataset.cache.fill import Origin, open_cached
from shardflow.dataset.cache.layout import (
    CACHE_FOLDER,
    INDEX_BASENAME,
    LIMIT_FILE,
    LOCK_FOLDER,
    REMOTE_FILE,
    Entry,
    cache_home,
    entry_path,
    lock_path,
    read_entries,
    read_limit,
    read_remote,
    tombstone_path,
)
from shardflow.dataset.cache.locks import LockState, acquire, file_lock, probe, release, try_lock
from shardflow.dataset.cache.report import cache_clean, cache_status, limit_status

__all__ = [
    "CACHE_FOLDER",
    "INDEX_BASENAME",
    "LIMIT_FILE",
    "LOCK_FOLDER",
    "REMOTE_FILE",
    "Entry",
    "LockState",
    "NodeCache",
    "Origin",
    "acquire",
    "cache_clean",
    "cache_home",
    "cache_status",
    "entry_path",
    "file_lock",
    "footprint",
    "limit_status",
    "lock_path",
    "open_cached",
    "probe",
    "read_entries",
    "read_limit",
    "read_remote",
    "release",
    "tombstone_path",
    "try_lock",
]
