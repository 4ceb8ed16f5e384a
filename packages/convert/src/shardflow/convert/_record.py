"""What ``convert.json`` records about a conversion, and what a ``--resume`` checks against it.

The record holds every option that shapes the output's bytes (compression, hashes, size limit, columns,
the converter's own settings), the number of partitions, a digest of the list of input units, and a
fingerprint of every input file. A resume is allowed only when all of them are the same now; otherwise
it is refused with a message naming each difference, and nothing at ``--out`` is touched.

A file's fingerprint is its size and a BLAKE2b digest of its content: of the whole file when it is
:data:`WHOLE_LIMIT` bytes or smaller, else of :data:`SAMPLES` ranges of :data:`SAMPLE_BYTES` spread
evenly over it (the first and last included), together with its mtime (nanoseconds). A whole-file
digest decides on content alone (a copy with a new mtime is the same input); a sampled one also needs
the same mtime. With more than :data:`MAX_LISTED` input files, files are fingerprinted one by one all
the same but recorded per folder (one digest over the folder's files' names and fingerprints), so
``convert.json`` stays small: a refusal then names the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = [
    "VERSION",
    "WHOLE_LIMIT",
    "SAMPLES",
    "SAMPLE_BYTES",
    "MAX_LISTED",
    "file_fingerprint",
    "input_fingerprints",
    "differences",
]

VERSION = 2
"""The record's format; records of another version are not resumed."""
WHOLE_LIMIT = 64 << 20
"""Files up to this many bytes are digested whole; bigger ones by sampled ranges."""
SAMPLES = 32
SAMPLE_BYTES = 1 << 20
MAX_LISTED = 10_000
"""Inputs of more files than this are recorded per folder."""


def file_fingerprint(path: str, whole_limit: int = WHOLE_LIMIT) -> str:
    """``'<size>:blake2b:<hex>'`` (whole file) or ``'<size>:<mtime_ns>:blake2b-sampled:<hex>'``."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as file:
        status = os.fstat(file.fileno())
        size = status.st_size
        if size <= whole_limit:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
            return f"{size}:blake2b:{digest.hexdigest()}"
        for k in range(SAMPLES):
            file.seek((size - SAMPLE_BYTES) * k // (SAMPLES - 1))
            digest.update(file.read(SAMPLE_BYTES))
        return f"{size}:{status.st_mtime_ns}:blake2b-sampled:{digest.hexdigest()}"


def input_fingerprints(paths: Iterable[str], whole_limit: int = WHOLE_LIMIT) -> dict[str, str]:
    """Absolute path to :func:`file_fingerprint` of each distinct file of ``paths`` (read by a few threads);
    per folder (``'<folder>/'`` to ``'<count> files:blake2b:<hex>'``) when there are more than
    :data:`MAX_LISTED`."""
    files = list(dict.fromkeys(os.path.abspath(path) for path in paths))
    with ThreadPoolExecutor(max(1, min(8, len(files)))) as pool:
        prints = list(pool.map(lambda path: file_fingerprint(path, whole_limit), files))
    if len(files) <= MAX_LISTED:
        return dict(zip(files, prints, strict=True))
    folders: dict[str, list[str]] = {}
    for path, value in zip(files, prints, strict=True):
        folder, name = os.path.split(path)
        folders.setdefault(os.path.join(folder, ""), []).append(f"{name} {value}")
    return {folder: f"{len(items)} files:blake2b:{_digest(items)}" for folder, items in folders.items()}


def _digest(lines: list[str]) -> str:
    return hashlib.blake2b("\n".join(lines).encode(), digest_size=16).hexdigest()


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _changed(name: str, then: str, now: str) -> str:
    """How the input ``name`` (a file, or a folder of files ending in ``/``) differs from its record."""
    if name.endswith(os.sep):
        return f"input folder {name}: a file in it was added, removed or changed ({then} then, {now} now)"
    old, new = then.split(":"), now.split(":")
    if old[0] != new[0]:
        return f"input {name}: {old[0]} bytes then, {new[0]} now"
    if len(old) == len(new) == 4 and old[1] != new[1]:
        return f"input {name}: modified since (mtime {old[1]} then, {new[1]} now; too big to digest whole)"
    return f"input {name}: its content differs (same size; digest {old[-1]} then, {new[-1]} now)"


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between the ``recorded`` conversion and the ``current`` one (both as
    ``{'version', 'converter', 'options', 'inputs', 'units'}``), one line each; empty when none does."""
    if recorded.get("version") != VERSION:
        return [
            f"it was recorded in another format (version {recorded.get('version', 1)}, not {VERSION}), "
            f"by another shardflow version: its options and input cannot be checked"
        ]
    if recorded.get("converter") != current["converter"]:
        return [f"converter: {recorded.get('converter')} then, {current['converter']} now"]
    found = []
    then, now = recorded.get("options", {}), current["options"]
    for key in sorted(set(then) | set(now)):
        if then.get(key) != now.get(key):
            found.append(f"{key}: {_show(then.get(key))} then, {_show(now.get(key))} now")
    then, now = recorded.get("inputs", {}), current["inputs"]
    for name in then:
        if name not in now:
            found.append(f"input {name} was part of it and is not now")
        elif then[name] != now[name]:
            found.append(_changed(name, then[name], now[name]))
    found += [f"input {name} is new" for name in now if name not in then]
    if not found and recorded.get("units") != current["units"]:
        found.append("the list of input items differs (the same files, listed or labelled differently)")
    return found
