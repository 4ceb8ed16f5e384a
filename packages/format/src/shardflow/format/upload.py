"""Where a dataset is written: a local folder, a remote URL, or both, and the uploader plug-in hook.

shardflow.format writes every file to a local folder. When ``out`` names a remote location (a URL such as
``s3://bucket/path``, or a ``(local, remote)`` pair), the writer hands each finished file to an
*uploader*, an object with the methods of :class:`ShardUploader`.

The protocol:

- :meth:`~ShardUploader.upload` takes each finished file, possibly from several threads at once, and may
  upload it in the background;
- :meth:`~ShardUploader.wait` blocks until every file handed over so far is uploaded and raises the first
  failure. "``index.json`` goes last" is a rule of the dataset format, kept here and not by uploaders:
  the writers and :func:`~shardflow.format.merge_index` call ``wait()`` and only then hand over
  ``index.json``, so a remote index never names a file that is not (yet) there;
- :meth:`~ShardUploader.finish` waits for the rest (the index) and releases the uploader, once;
- :meth:`~ShardUploader.list_objects` and :meth:`~ShardUploader.download` let ``merge_index`` read
  remote partitions.

Uploaders are not part of shardflow.format: a package provides them through the entry-point group
``shardflow.format.uploaders``. One entry named ``any`` serves every remote scheme; an entry named after a
scheme (``s3``, ...) takes precedence for that scheme::

    # pyproject.toml of the providing package (shardflow-storage)
    [project.entry-points."shardflow.format.uploaders"]
    any = "shardflow.storage.upload:make_uploader"

shardflow-storage's factory serves every scheme its backend registry knows: the built-in ones, those of
the ``shardflow.storage.backends`` entry points and those registered in this process with
``shardflow.storage.register_backend``; for another scheme it raises a ``ValueError`` that lists them.

The factory is called as ``factory(remote, progress_bar=..., max_workers=..., retry=...)`` by the writers,
and as ``factory(remote, download_timeout=...)`` by :func:`~shardflow.format.merge_index`.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
import warnings
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Union

from shardflow.format.errors import MissingDependencyError

__all__ = [
    "ENTRY_POINT_GROUP",
    "ANY_SCHEME",
    "Out",
    "ShardUploader",
    "split_out",
    "get_uploader",
    "remote_uploader",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "shardflow.format.uploaders"

ANY_SCHEME = "any"
"""The name of the entry point that serves every remote scheme without an entry of its own."""

Out = Union[str, "os.PathLike[str]", tuple[str, str]]


class ShardUploader(Protocol):
    """What shardflow.format needs from an uploader rooted at a remote dataset folder.

    A writer calls :meth:`upload` once per finished file, as files are finished: with compression, from
    several threads at once (so it must be thread-safe) and in any order. Before ``index.json`` it calls
    :meth:`wait`, then hands the index over with :meth:`upload`, then calls :meth:`finish`, once.
    :func:`~shardflow.format.merge_index` reads remote partitions with :meth:`list_objects` and
    :meth:`download`, then calls :meth:`finish`.
    """

    def upload(self, local_path: Path, relative_name: str) -> None:
        """Upload one finished file, now or in the background.

        The file stays readable until :meth:`finish` returns. The uploader treats every name alike: the
        order of publication is the caller's, through :meth:`wait`.

        Args:
            local_path: The local file, complete and never modified afterwards.
            relative_name: Its name relative to the remote dataset root, e.g. ``shard.00003.mds``.

        Raises:
            Exception: An earlier upload failed (an uploader may refuse further files after a failure).
        """

    def wait(self) -> None:
        """Block until every upload handed over so far is done; raise the first failure, if any."""

    def finish(self) -> None:
        """Wait until every upload is done; raise if any of them failed. The uploader is then spent."""

    def list_objects(self, prefix: str = "") -> list[str]:
        """List the remote files below the root.

        Args:
            prefix: Keep only names that start with it, e.g. ``part0/``.

        Returns:
            The names, relative to the root and sorted, of every file below it (in sub-folders too).
        """

    def download(self, relative_name: str, local_path: Path) -> Path:
        """Download one remote file.

        Args:
            relative_name: Its name relative to the remote root, e.g. ``part0/index.json``.
            local_path: Where to write it; missing parent folders are created, an existing file replaced.

        Returns:
            ``local_path``, complete (never seen partially written).

        Raises:
            FileNotFoundError: There is no such remote file.
        """


if TYPE_CHECKING:
    Uploader = ShardUploader
    """Deprecated alias of :class:`ShardUploader`."""
else:

    def __getattr__(name: str) -> Any:
        if name == "Uploader":
            warnings.warn(
                "shardflow.format.upload.Uploader is deprecated: use ShardUploader (the name Uploader is "
                "shardflow.storage's uploader class)",
                DeprecationWarning,
                stacklevel=2,
            )
            return ShardUploader
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def get_uploader(out: Out, **options: Any) -> ShardUploader | None:
    """The uploader for ``out``, or ``None`` when ``out`` is only local (see :func:`remote_uploader`).

    Args:
        out: A local folder, a remote URL, or a ``(local, remote)`` pair.
        **options: Passed to the uploader factory (``progress_bar``, ``max_workers``, ``retry``).
    """
    _, remote = split_out(out)
    return None if remote is None else remote_uploader(remote, **options)


def remote_uploader(remote: str, **options: Any) -> ShardUploader:
    """A new uploader rooted at the URL ``remote``, from the ``shardflow.format.uploaders`` entry points.

    The entry named after the URL's scheme is used if there is one, else the one named ``any``.

    Args:
        remote: A remote folder URL, e.g. ``s3://bucket/dataset``.
        **options: Passed to the uploader factory.

    Raises:
        MissingDependencyError: No package provides uploaders (install shardflow-storage).
        ValueError: Uploaders are installed, but none for this URL scheme (the ``any`` factory raises it
            too, listing the schemes it serves).
    """
    scheme = _remote_scheme(remote)
    found = {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}
    if not found:
        raise MissingDependencyError(
            f"{remote!r} is a remote {scheme}:// location, and no uploader is installed: "
            "pip install shardflow-storage (or use a local folder)"
        )
    entry = found.get(scheme or "") or found.get(ANY_SCHEME)
    if entry is None:
        raise ValueError(
            f"{remote!r}: no uploader handles {scheme}:// URLs; installed schemes: {sorted(found)}"
        )
    logger.debug("reaching %s with %s", remote, entry.value)
    factory = entry.load()
    uploader: ShardUploader = factory(remote, **options)
    return uploader
