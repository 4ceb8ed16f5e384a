"""Where a dataset is written: a local folder, a remote URL, or both, and the uploader plug-in hook.

shardflow.format writes every file to a local folder. When ``out`` names a remote location (a URL such as
``s3://bucket/path``, or a ``(local, remote)`` pair), the writer hands each finished file to an
*uploader*. Uploaders are not part of shardflow.format: a package provides them by registering, in the
entry-point group ``shardflow.format.uploaders``, one entry per URL scheme whose object is a factory::

    # pyproject.toml of the providing package (shardflow-storage)
    [project.entry-points."shardflow.format.uploaders"]
    s3 = "shardflow.storage.upload:make_uploader"

The factory is called as ``factory(remote, progress_bar=..., max_workers=..., retry=...)`` and returns an
object with the methods of :class:`Uploader`.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, Union

from shardflow.format.errors import MissingDependencyError

__all__ = ["ENTRY_POINT_GROUP", "Out", "Uploader", "split_out", "get_uploader"]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "shardflow.format.uploaders"

Out = Union[str, "os.PathLike[str]", tuple[str, str]]


class Uploader(Protocol):
    """What a writer needs from an uploader.

    The writer calls :meth:`upload` once per finished file, in the order the files were finished, and
    ``index.json`` last; then :meth:`finish` once.
    """

    def upload(self, local_path: Path, relative_name: str) -> None:
        """Upload one finished file.

        The upload may run in the background, but the file must stay readable until :meth:`finish`
        returns, and ``index.json`` must not become visible remotely before every file handed over
        earlier is uploaded.

        Args:
            local_path: The local file, complete and never modified afterwards.
            relative_name: Its name relative to the remote dataset root, e.g. ``shard.00003.mds``.
        """

    def finish(self) -> None:
        """Wait until every upload is done; raise if any of them failed."""


def _remote_scheme(text: str) -> str | None:
    """The URL scheme of ``text``, or ``None`` for a local path (Windows drive letters included)."""
    scheme = urllib.parse.urlparse(text).scheme
    return scheme if len(scheme) > 1 else None


def split_out(out: Out) -> tuple[str | None, str | None]:
    """Split a writer's ``out`` into its local folder and remote URL.

    Args:
        out: A local folder, a remote URL, or a ``(local, remote)`` pair.

    Returns:
        ``(local, remote)``; ``local`` is ``None`` for a bare remote URL, ``remote`` is ``None`` for a
        bare local folder. Any URL with a scheme is remote, ``file://`` included (an uploader may
        register it, e.g. to copy to another folder).

    Raises:
        ValueError: ``out`` is a pair whose first item is a URL or whose second is not.
    """
    if isinstance(out, tuple):
        if len(out) != 2:
            raise ValueError(f"out={out!r}: a tuple must be (local folder, remote URL)")
        local, remote = os.fspath(out[0]), str(out[1])
        if _remote_scheme(local) is not None or _remote_scheme(remote) is None:
            raise ValueError(f"out={out!r}: a tuple must be (local folder, remote URL), in that order")
        return os.path.expanduser(local), remote
    text = os.fspath(out)
    if _remote_scheme(text) is None:
        return os.path.expanduser(text), None
    return None, text


def get_uploader(out: Out, **options: Any) -> Uploader | None:
    """The uploader for ``out``, found through the ``shardflow.format.uploaders`` entry points.

    Args:
        out: A local folder, a remote URL, or a ``(local, remote)`` pair.
        **options: Passed to the uploader factory (``progress_bar``, ``max_workers``, ``retry``).

    Returns:
        ``None`` when ``out`` is only local, else a new uploader for the remote URL.

    Raises:
        MissingDependencyError: No package provides uploaders (install shardflow-storage).
        ValueError: Uploaders are installed, but none for this URL scheme.
    """
    _, remote = split_out(out)
    if remote is None:
        return None
    scheme = _remote_scheme(remote)
    found = {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}
    if not found:
        raise MissingDependencyError(
            f"out={remote!r} is a remote {scheme}:// location, and no uploader is installed: "
            "pip install shardflow-storage (or write to a local folder)"
        )
    if scheme not in found:
        raise ValueError(
            f"out={remote!r}: no uploader handles {scheme}:// URLs; installed schemes: {sorted(found)}"
        )
    logger.debug("uploading to %s with %s", remote, found[scheme].value)
    factory = found[scheme].load()
    uploader: Uploader = factory(remote, **options)
    return uploader
