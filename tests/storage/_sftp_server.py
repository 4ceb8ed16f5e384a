"""An SSH server on 127.0.0.1 that serves SFTP over a local folder, run by paramiko in this process.

It accepts one user key (public-key authentication only), serves the SFTP operations the backend uses
(open, read, write, stat, listing, mkdir, remove, rename, posix-rename) on files below its root, and can
inject the failures the storage contract asks about: a path refused (permission denied), a connection
dropped in the middle of a read, and reads that stall.
"""

from __future__ import annotations

import collections
import os
import socket
import threading
from pathlib import Path
from typing import Any

import paramiko
from paramiko import SFTPAttributes, SFTPHandle, SFTPServer, SFTPServerInterface

__all__ = ["SFTPTestServer", "write_key_files"]


def write_key_files(folder: Path) -> tuple[paramiko.RSAKey, paramiko.RSAKey, Path]:
    """A host key and a user key, the user's private key written to ``folder/id_rsa``."""
    host_key = paramiko.RSAKey.generate(2048)
    user_key = paramiko.RSAKey.generate(2048)
    private = folder / "id_rsa"
    user_key.write_private_key_file(str(private))
    return host_key, user_key, private


class SFTPTestServer:
    """SFTP over ``root``, on ``127.0.0.1:<port>``, for the user ``user`` holding ``user_key``.

    Attributes:
        operations: SFTP requests served, per ``(operation, path below the root)``.
        deny: Paths containing one of these strings are refused (permission denied).
        drop: Paths containing one of these strings: the next read of each closes the connection.
        stall: Paths containing one of these strings: reads wait ``stall_seconds`` before answering.
    """

    def __init__(self, root: Path, user: str, host_key: paramiko.PKey, user_key: paramiko.PKey) -> None:
        self.root = root
        self.user = user
        self.host_key = host_key
        self.user_key = user_key
        self.operations: collections.Counter[tuple[str, str]] = collections.Counter()
        self.deny: set[str] = set()
        self.drop: set[str] = set()
        self.stall: set[str] = set()
        self.stall_seconds = 5.0
        self.lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._transports: list[paramiko.Transport] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def known_hosts_line(self) -> str:
        """The server's line for a known_hosts file."""
        return f"[127.0.0.1]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}\n"

    def start(self) -> SFTPTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        with self.lock:
            for transport in self._transports:
                transport.close()

    def local(self, path: str) -> Path:
        """The file under the root that an SFTP path names (absolute SFTP paths are below the root)."""
        return self.root / path.lstrip("/")

    def count(self, operation: str, path: str) -> str | None:
        """Record one request; return the fault to inject for it, if any."""
        with self.lock:
            self.operations[(operation, path)] += 1
            if any(marker in path for marker in self.deny):
                return "deny"
            if operation == "read" and any(marker in path for marker in self.stall):
                return "stall"
            if operation == "read":
                for marker in list(self.drop):
                    if marker in path:
                        self.drop.discard(marker)
                        return "drop"
        return None

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(connection)
            transport.add_server_key(self.host_key)
            transport.set_subsystem_handler("sftp", SFTPServer, _RootedSFTP, self)
            with self.lock:
                self._transports.append(transport)
            try:
                transport.start_server(server=_Authenticator(self, transport))
            except (paramiko.SSHException, EOFError, OSError):
                transport.close()


class _Authenticator(paramiko.ServerInterface):
    def __init__(self, server: SFTPTestServer, transport: paramiko.Transport) -> None:
        self.server = server
        self.transport = transport

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == self.server.user and key == self.server.user_key:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class _Handle(SFTPHandle):
    def __init__(
        self, server: SFTPTestServer, transport: paramiko.Transport, path: str, file: Any, flags: int
    ) -> None:
        super().__init__(flags)
        self.server = server
        self.transport = transport
        self.path = path
        self.readfile = self.writefile = file

    def read(self, offset: int, length: int) -> bytes | int:
        fault = self.server.count("read", self.path)
        if fault == "stall":
            self.server._stopping.wait(self.server.stall_seconds)
        if fault == "drop":
            self.transport.close()  # the connection breaks in the middle of the transfer
            return paramiko.SFTP_CONNECTION_LOST
        return super().read(offset, length)

    def stat(self) -> SFTPAttributes | int:
        try:
            return SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)


class _RootedSFTP(SFTPServerInterface):
    """The SFTP requests, on files below the server's root."""

    def __init__(self, ssh_server: _Authenticator, server: SFTPTestServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(ssh_server, *args, **kwargs)
        self.server = server
        self.transport = ssh_server.transport

    def _checked(self, operation: str, path: str) -> Path | int:
        if self.server.count(operation, path) == "deny":
            return paramiko.SFTP_PERMISSION_DENIED
        return self.server.local(path)

    def canonicalize(self, path: str) -> str:
        return "/" + os.path.normpath("/" + path).lstrip("/")

    def open(self, path: str, flags: int, attr: SFTPAttributes) -> SFTPHandle | int:
        local = self._checked("open", path)
        if isinstance(local, int):
            return local
        writing = flags & (os.O_WRONLY | os.O_RDWR)
        mode = "wb" if writing and flags & os.O_TRUNC else "r+b" if writing else "rb"
        try:
            if writing and flags & os.O_CREAT and not local.exists():
                local.touch()
            file = open(local, mode)
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        return _Handle(self.server, self.transport, path, file, flags)

    def _attrs(self, operation: str, path: str) -> SFTPAttributes | int:
        local = self._checked(operation, path)
        if isinstance(local, int):
            return local
        try:
            return SFTPAttributes.from_stat(os.stat(local))
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)

    def stat(self, path: str) -> SFTPAttributes | int:
        return self._attrs("stat", path)

    def lstat(self, path: str) -> SFTPAttributes | int:
        return self._attrs("lstat", path)

    def list_folder(self, path: str) -> list[SFTPAttributes] | int:
        local = self._checked("list", path)
        if isinstance(local, int):
            return local
        try:
            names = os.listdir(local)
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        entries = []
        for name in names:
            entry = SFTPAttributes.from_stat(os.stat(local / name))
            entry.filename = name
            entries.append(entry)
        return entries

    def _act(self, operation: str, path: str, action: Any) -> int:
        local = self._checked(operation, path)
        if isinstance(local, int):
            return local
        try:
            action(local)
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        return paramiko.SFTP_OK

    def remove(self, path: str) -> int:
        return self._act("remove", path, os.remove)

    def mkdir(self, path: str, attr: SFTPAttributes) -> int:
        return self._act("mkdir", path, os.mkdir)

    def rmdir(self, path: str) -> int:
        return self._act("rmdir", path, os.rmdir)

    def rename(self, oldpath: str, newpath: str) -> int:
        def rename(local: Path) -> None:
            target = self.server.local(newpath)
            if target.exists():
                raise FileExistsError(17, "exists", str(target))
            os.rename(local, target)

        return self._act("rename", oldpath, rename)

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return self._act("posix_rename", oldpath, lambda local: os.replace(local, self.server.local(newpath)))

    def chattr(self, path: str, attr: SFTPAttributes) -> int:
        return paramiko.SFTP_OK
