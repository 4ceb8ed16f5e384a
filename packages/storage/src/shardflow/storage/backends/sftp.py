"""Files on an SSH server through paramiko's SFTP client: ``sftp://user@host:port/absolute/path``."""

from __future__ import annotations

import logging
import os
import posixpath
import secrets
import stat
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any, BinaryIO

from shardflow.storage._deps import require
from shardflow.storage._io import TEMP_NAME
from shardflow.storage.backend import CHUNK_SIZE, Backend, ObjectStat, Sink
from shardflow.storage.errors import (
    ObjectNotFoundError,
    PermissionDeniedError,
    StorageError,
    TransientStorageError,
    UnsupportedURLError,
)

__all__ = ["SFTPBackend"]

logger = logging.getLogger(__name__)

_EXAMPLE = "sftp://user@host:22/absolute/path"
_KEY_HINT = (
    "check the user name, the key (key_filename=, $COMPOSER_SFTP_KEY_FILE, the ssh-agent at $SSH_AUTH_SOCK, "
    "~/.ssh/id_*) or the URL's password"
)

_Endpoint = tuple[str | None, str | None, str, int]  # user, password, host, port


class SFTPBackend(Backend):
    """``sftp://[user[:password]@]host[:port]/absolute/path`` (port 22 by default).

    Credentials, in the order paramiko tries them: ``key_filename`` (default ``$COMPOSER_SFTP_KEY_FILE``,
    as in mosaicml-streaming), the password in the URL, the keys of the ssh-agent at ``$SSH_AUTH_SOCK``,
    then ``~/.ssh/id_rsa``, ``id_ecdsa`` and ``id_ed25519``. The server's host key must be known: it is
    looked up in ``~/.ssh/known_hosts`` and in ``known_hosts`` (default ``$COMPOSER_SFTP_KNOWN_HOSTS_FILE``);
    an unknown host is refused.

    One SSH connection per server and process carries one SFTP channel per thread; a broken one is opened
    again on next use. Uploads write a hidden temporary file beside the target and rename it onto the
    target (``posix-rename@openssh.com``, atomic; without that extension the old file is removed first),
    so a reader never sees a partial file. Listings skip those temporary names.

    Args:
        key_filename: Private key file(s) to offer.
        known_hosts: A known_hosts file to trust besides ``~/.ssh/known_hosts``.
        connect_timeout: Seconds to wait for the connection, the banner and the authentication.
        read_timeout: Seconds one read from the channel may wait.
    """

    scheme = "sftp"
    env_vars = ("COMPOSER_SFTP_KEY_FILE", "COMPOSER_SFTP_KNOWN_HOSTS_FILE", "SSH_AUTH_SOCK")

    def __init__(
        self,
        *,
        key_filename: str | list[str] | None = None,
        known_hosts: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        require("paramiko", scheme="sftp", extra="sftp")
        self.key_filename = key_filename or os.environ.get("COMPOSER_SFTP_KEY_FILE") or None
        self.known_hosts = known_hosts or os.environ.get("COMPOSER_SFTP_KNOWN_HOSTS_FILE") or None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._lock = threading.Lock()
        self._ssh: dict[_Endpoint, Any] = {}
        self._local = threading.local()
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "key_filename": self.key_filename,
            "known_hosts": self.known_hosts,
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    # -- connections ---------------------------------------------------------------------------------

    @staticmethod
    def _split(url: str) -> tuple[_Endpoint, str, str]:
        """``(endpoint, path, head)`` of ``url``: ``head`` is ``sftp://netloc``, the path is absolute."""
        if not url.startswith("sftp://"):
            raise UnsupportedURLError(f"{url!r} is not an sftp:// URL; expected e.g. {_EXAMPLE}", url)
        parts = urllib.parse.urlsplit(url)
        if not parts.hostname:
            raise UnsupportedURLError(f"{url!r} names no host; expected e.g. {_EXAMPLE}", url)
        if parts.query or parts.fragment:
            raise UnsupportedURLError(f"{url!r}: sftp:// URLs take no query or fragment", url)
        user = urllib.parse.unquote(parts.username) if parts.username else None
        password = urllib.parse.unquote(parts.password) if parts.password else None
        endpoint = (user, password, parts.hostname, parts.port or 22)
        return endpoint, parts.path or "/", f"sftp://{parts.netloc}"

    def _connect(self, endpoint: _Endpoint) -> Any:
        import paramiko

        user, password, host, port = endpoint
        client = paramiko.SSHClient()
        client.load_system_host_keys()
        if self.known_hosts:
            client.load_host_keys(self.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                host,
                port=port,
                username=user,
                password=password,
                key_filename=self.key_filename,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
            )
        except paramiko.SSHException as exc:
            transport = client.get_transport()
            refused = (
                transport is not None
                and transport.is_active()
                and not transport.is_authenticated()
                and transport.remote_version  # past the handshake: the server answered
                and not isinstance(exc, paramiko.BadHostKeyException)
                and "known_hosts" not in str(exc)
            )
            client.close()
            if refused:  # paramiko reports the last key it failed to load, not the refusal
                raise paramiko.AuthenticationException(f"no offered credential was accepted ({exc})") from exc
            raise
        logger.debug("connected to %s:%d as %s", host, port, user)
        return client

    def _sftp(self, endpoint: _Endpoint) -> Any:
        """This thread's SFTP channel to ``endpoint``, over the process's connection (opened as needed)."""
        if self._pid != os.getpid():  # forked: the parent's sockets are not ours
            with self._lock:
                if self._pid != os.getpid():
                    self._ssh, self._local, self._pid = {}, threading.local(), os.getpid()
        channels: dict[_Endpoint, Any] = self._local.__dict__.setdefault("channels", {})
        sftp = channels.get(endpoint)
        if (
            sftp is not None
            and not sftp.get_channel().closed
            and sftp.get_channel().get_transport().is_active()
        ):
            return sftp
        with self._lock:
            client: Any = self._ssh.get(endpoint)
            transport = client.get_transport() if client is not None else None
            if transport is None or not transport.is_active():
                if client is not None:
                    client.close()
                client = self._ssh[endpoint] = self._connect(endpoint)
        sftp = client.open_sftp()
        sftp.get_channel().settimeout(self.read_timeout)
        channels[endpoint] = sftp
        return sftp

    def _drop(self, endpoint: _Endpoint) -> None:
        """Close this thread's channel after a failure, so that the next use opens a fresh one."""
        sftp = self._local.__dict__.get("channels", {}).pop(endpoint, None)
        if sftp is not None:
            try:
                sftp.close()
            except Exception:  # already broken
                pass

    def _run(self, url: str, action: Any) -> Any:
        """``action(sftp, path)`` on this thread's channel, dropped after a transport failure."""
        endpoint, path, _ = self._split(url)
        try:
            return action(self._sftp(endpoint), path)
        except (FileNotFoundError, PermissionError):
            raise
        except Exception:
            self._drop(endpoint)
            raise

    # -- operations ----------------------------------------------------------------------------------

    def read_into(self, url: str, sink: Sink, start: int = 0, end: int | None = None) -> int | None:
        def read(sftp: Any, path: str) -> int:
            with sftp.open(path, "rb") as remote:
                found = remote.stat()
                if stat.S_ISDIR(found.st_mode or 0):
                    raise IsADirectoryError(path)
                stop = found.st_size if end is None else min(end, found.st_size)
                if start >= stop:
                    return 0
                pieces = [
                    (offset, min(CHUNK_SIZE, stop - offset)) for offset in range(start, stop, CHUNK_SIZE)
                ]
                for data in remote.readv(pieces):  # pipelined requests, answered in order
                    sink.write(data)
                return stop - start

        announced: int = self._run(url, read)
        return announced

    def write_from(self, url: str, source: BinaryIO, size: int) -> None:
        def write(sftp: Any, path: str) -> None:
            if not path.strip("/") or path.endswith("/"):
                raise UnsupportedURLError(f"{url!r} names no file; expected e.g. {_EXAMPLE}", url)
            folder, name = posixpath.split(path)
            _makedirs(sftp, folder)
            tmp = posixpath.join(folder, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
            try:
                sftp.putfo(source, tmp, file_size=size, confirm=True)
                try:
                    sftp.posix_rename(tmp, path)
                except OSError as exc:
                    if "posix-rename" not in str(exc) and "unsupported" not in str(exc).lower():
                        raise
                    _remove_quietly(sftp, path)  # no atomic replace on this server
                    sftp.rename(tmp, path)
            except BaseException:
                _remove_quietly(sftp, tmp)
                raise

        self._run(url, write)

    def size(self, url: str) -> int:
        return self.stat(url).size

    def stat(self, url: str) -> ObjectStat:
        def look(sftp: Any, path: str) -> Any:
            found = sftp.stat(path)
            if stat.S_ISDIR(found.st_mode or 0):
                raise IsADirectoryError(path)
            return found

        found = self._run(url, look)
        return ObjectStat(found.st_size, f"{found.st_mtime}-{found.st_size}")

    def list(self, prefix: str, page_size: int | None = None) -> Iterator[str]:
        endpoint, path, head = self._split(prefix)
        top = path if path.endswith("/") else posixpath.dirname(path)
        found: list[str] = []

        def walk(sftp: Any, folder: str) -> None:
            try:
                entries = sftp.listdir_attr(folder)
            except FileNotFoundError:
                return
            for entry in sorted(entries, key=lambda item: item.filename):
                full = posixpath.join(folder, entry.filename)
                if stat.S_ISDIR(entry.st_mode or 0):
                    if full.startswith(path) or path.startswith(full + "/"):
                        walk(sftp, full)
                elif full.startswith(path) and not TEMP_NAME.match(entry.filename):
                    found.append(head + full)

        self._run(prefix, lambda sftp, _: walk(sftp, top or "/"))
        yield from found

    def delete(self, url: str) -> None:
        self._run(url, lambda sftp, path: _remove_quietly(sftp, path))

    def translate(self, exc: BaseException, url: str) -> StorageError | None:
        import paramiko

        if isinstance(exc, IsADirectoryError):
            return ObjectNotFoundError(f"{url} is a folder, not a file: name a file under it", url)
        if isinstance(exc, FileNotFoundError):
            return ObjectNotFoundError(f"{url} does not exist: check the path on the server", url)
        if isinstance(exc, PermissionError):
            return PermissionDeniedError(
                f"access to {url} was refused by the server: check the credentials' rights on that path", url
            )
        if isinstance(exc, paramiko.BadHostKeyException):
            return PermissionDeniedError(
                f"the host key of {url} differs from the one in known_hosts: check the server's identity and "
                "your known_hosts file",
                url,
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return PermissionDeniedError(f"the server refused the credentials for {url}: {_KEY_HINT}", url)
        if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
            return PermissionDeniedError(
                f"the host of {url} is not in known_hosts ({exc}): refused credentials are not the cause; "
                "add its "
                "key (ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts) or pass known_hosts=",
                url,
            )
        if isinstance(exc, (paramiko.SSHException, EOFError, ConnectionError, TimeoutError)) or (
            isinstance(exc, OSError) and exc.errno is None and "closed" in str(exc).lower()
        ):
            return TransientStorageError(f"transfer of {url} failed: {type(exc).__name__}: {exc}", url)
        if isinstance(exc, OSError):
            return StorageError(f"the server failed the request for {url}: {exc}", url)
        return None


def _makedirs(sftp: Any, folder: str) -> None:
    """Create ``folder`` and its missing parents on the server."""
    missing = []
    while folder not in ("", "/"):
        try:
            sftp.stat(folder)
            break
        except FileNotFoundError:
            missing.append(folder)
            folder = posixpath.dirname(folder)
    for path in reversed(missing):
        try:
            sftp.mkdir(path)
        except OSError:
            sftp.stat(path)  # made meanwhile by another writer; otherwise raise what stat raises


def _remove_quietly(sftp: Any, path: str) -> None:
    try:
        sftp.remove(path)
    except FileNotFoundError:
        pass
