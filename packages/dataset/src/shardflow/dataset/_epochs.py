"""Which epoch each iteration runs, counted where an owner's DataLoader workers all see it: a small file.

torch's ``DataLoader`` hands its workers a fresh copy of the dataset at each ``iter()`` (unless
``persistent_workers``), so a count kept in the copies never advances and the owner's copy never learns
of an iteration. Here the process that owns the dataset (built it, or unpickled it outside a DataLoader
worker) has a *ledger*: ``<folder>/<pid>-<id>.json``, listing the iterations (*runs*) of the current
*generation*. A generation starts at construction, at ``set_epoch`` and at ``load_state_dict``, from a
*base* (epoch, sample in epoch); run ``i`` of it is epoch ``base + i``. A DataLoader worker's ``__iter__``
joins the run that its DataLoader iterator started (the workers of one iterator share torch's base seed)
or starts the next one, under an ``flock``; the file is replaced whole (temporary name, rename), so a
kill at any moment leaves the previous list or the new one.

Nothing outlives its processes in a harmful way: the owner holds a shared ``flock`` on ``<pid>-<id>.owner``
for its life (the kernel drops it when the owner dies) and removes its files when it is collected or
exits; the first dataset a process builds removes the files of owners whose mark nobody holds, and
ledgers without a mark (owners that never marked, e.g. forked children) after a day.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from shardflow.dataset.cache.layout import cache_home
from shardflow.dataset.errors import EpochLedgerError

__all__ = ["EpochLedger", "epochs_folder", "sweep"]

logger = logging.getLogger(__name__)

KEEP_RUNS = 64
"""Runs a ledger remembers (older ones are counted, not listed: no iterator joins a run that old)."""

ORPHAN_AGE = 24 * 3600
"""Seconds after which a ledger without an owner's mark is removed."""

LOCK_TIMEOUT = 60.0
"""Seconds to wait for a ledger's lock (its holders keep it for the time of a small read and write)."""

_T = TypeVar("_T")
_swept: set[str] = set()  # folders this process has swept


def epochs_folder() -> Path:
    """Where ledgers live: ``$SHARDFLOW_CACHE_DIR`` (default ``~/.cache/shardflow``) ``/epochs``."""
    return cache_home() / "epochs"


def _fresh(generation: int, base: tuple[int, int]) -> dict[str, Any]:
    return {"generation": generation, "base": list(base), "first": 0, "runs": []}


class _Mark:
    """An owner's shared lock on ``<name>.owner``, held for its life; its files go when it is collected."""

    def __init__(self, folder: Path, name: str) -> None:
        self.pid = os.getpid()
        path = folder / f"{name}.owner"
        for _ in range(3):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_SH)
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == os.fstat(fd).st_ino:  # a sweep did not remove it meanwhile
                    break
            os.close(fd)
        else:
            raise OSError(errno.EAGAIN, f"could not keep a mark at {path}")
        self.finalizer = weakref.finalize(self, _remove_own, folder, name, fd, self.pid)

    def drop(self) -> None:
        self.finalizer()


def _remove_own(folder: Path, name: str, fd: int, pid: int) -> None:
    """Close an owner's mark and remove its files, in the process that made it only (not in forks)."""
    if os.getpid() != pid:
        return
    _remove_files(folder, name)
    with contextlib.suppress(OSError):
        os.close(fd)


def _remove_files(folder: Path, name: str) -> None:
    """Remove a ledger's files, its mark last."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    mine = sorted((n for n in names if n.startswith(name + ".")), key=lambda n: n.endswith(".owner"))
    for entry in mine:
        with contextlib.suppress(OSError):
            os.unlink(folder / entry)


def sweep(folder: Path) -> None:
    """Remove the files of owners that died (nobody holds their mark) and of unmarked ledgers left for a
    day."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    owners = {n[: -len(".owner")] for n in names if n.endswith(".owner")}
    for name in owners:
        try:
            fd = os.open(folder / f"{name}.owner", os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # its owner lives
            continue
        _remove_files(folder, name)
        os.close(fd)
        logger.debug("removed the epoch ledger of %s, whose owner is gone", name)
    now = time.time()
    for entry in names:
        name = entry.split(".", 1)[0]
        if name in owners or not entry.endswith(".json"):
            continue
        with contextlib.suppress(OSError):
            if now - os.stat(folder / entry).st_mtime > ORPHAN_AGE:
                _remove_files(folder, name)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed), waiting up to ``LOCK_TIMEOUT``."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EpochLedgerError(
                        f"waited {LOCK_TIMEOUT:.0f} s for the epoch ledger lock {path}: a process holds it "
                        f"without releasing it (a stopped process?); end it, or delete {path}"
                    ) from None
                time.sleep(0.002)
        yield
    finally:
        os.close(fd)


class EpochLedger:
    """The epochs of a dataset's iterations, kept by the process that owns it and shared with its workers.

    The dataset asks :meth:`start_run` when it iterates in the owner (or when ``StreamingDataLoader`` is
    about to start workers: :attr:`planned` then tells them their run), :meth:`claim` in a DataLoader
    worker, and :meth:`latest` for ``state_dict``. :meth:`restart` begins a generation.
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder if folder is not None else epochs_folder()
        self.generation = 0
        self.base: tuple[int, int] = (0, 0)
        self.planned: tuple[int, int] | None = None  # (generation, run) of the workers being started
        self._id = uuid.uuid4().hex[:16]
        self._last: tuple[int, int] | None = None  # owner: (run, workers) of the last run it knows of
        self._claimed: set[tuple[str, int, int]] = set()  # worker: the (ledger, generation, run) it ran
        self._handed: str | None = None  # the ledger of the process that pickled this copy
        self._unpickled_in = 0
        self._mark: _Mark | None = None
        self._mark_owner()

    # -- identity --------------------------------------------------------------------------------

    def name(self, worker: bool) -> str:
        """The ledger this process's iterations count in: its own, or (in a DataLoader worker) its owner's:
        the process that pickled the copy it was handed, else (forked) its parent."""
        if not worker:
            return f"{os.getpid()}-{self._id}"
        if self._handed is not None and self._unpickled_in == os.getpid():
            return self._handed
        return f"{os.getppid()}-{self._id}"

    def _mark_owner(self) -> None:
        """Hold this process's mark (see the module), removing dead owners' files first; best effort."""
        if self._mark is not None and self._mark.pid == os.getpid():
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if str(self.folder) not in _swept:  # once per process and folder
                _swept.add(str(self.folder))
                sweep(self.folder)
            self._mark = _Mark(self.folder, self.name(False))
        except OSError as exc:
            logger.debug("no epoch ledger mark in %s: %s", self.folder, exc)
            self._mark = None

    def handed(self, worker: bool) -> EpochLedger:
        """A copy to pickle: it knows this process's ledger, for the DataLoader workers that unpickle it."""
        copy = object.__new__(EpochLedger)
        copy.__dict__.update(self.__dict__)
        copy._handed = self.name(worker)
        copy._mark = None
        return copy

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_mark"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """An unpickled copy is a new owner (a spawned rank, a deep copy) unless a DataLoader worker
        unpickled it; which one shows at its first iteration (:meth:`claim` drops the mark)."""
        self.__dict__.update(state)
        self._id = uuid.uuid4().hex[:16]
        self._unpickled_in = os.getpid()
        self._claimed = set()
        self._last = None
        self._mark_owner()

    # -- the file ----------------------------------------------------------------------------------

    def _read(self, name: str) -> dict[str, Any] | None:
        path = self.folder / f"{name}.json"
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            state = json.loads(text)
            if not isinstance(state["generation"], int) or not isinstance(state["runs"], list):
                raise ValueError("bad fields")
            return state  # type: ignore[no-any-return]
        except (ValueError, KeyError, TypeError) as exc:
            raise EpochLedgerError(
                f"the epoch ledger {path} is unreadable ({exc}): was it edited? Delete it; the next "
                f"iteration then starts from the dataset's epoch in this process"
            ) from None

    def _update(self, name: str, change: Callable[[dict[str, Any]], _T]) -> _T:
        """Apply ``change`` to the ledger ``name`` (brought to this copy's generation) under its lock."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with _locked(self.folder / f"{name}.lock"):
            state = self._read(name)
            if state is None or state["generation"] < self.generation:
                state = _fresh(self.generation, self.base)
            elif state["generation"] > self.generation:  # the owner moved on since this copy was made
                self.generation, self.base = state["generation"], (state["base"][0], state["base"][1])
            result = change(state)
            runs = state["runs"]
            if len(runs) > KEEP_RUNS:
                state["first"] += len(runs) - KEEP_RUNS
                state["runs"] = runs[-KEEP_RUNS:]
            fd, temp = tempfile.mkstemp(dir=self.folder, prefix=f"{name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as out:
                    json.dump(state, out)
                os.replace(temp, self.folder / f"{name}.json")
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
            return result

    # -- the owner ---------------------------------------------------------------------------------

    def restart(self, epoch: int, offset: int) -> None:
        """Begin a generation whose first run is ``epoch`` from ``offset`` (set_epoch, load_state_dict)."""
        self.generation += 1
        self.base = (epoch, offset)
        self.planned = None
        self._last = None
        self._mark_owner()
        try:  # persistent workers read it: their copies are older
            self._update(self.name(False), lambda state: None)
        except OSError as exc:
            logger.debug("epoch ledger not written in %s: %s", self.folder, exc)

    def start_run(self, workers: int, seed: int | None = None) -> int:
        """Number a new run of this generation in the owner: one it iterates itself (``workers`` 1), or
        one whose ``workers`` DataLoader workers it is about to start (then set :attr:`planned`); ``seed``
        is the DataLoader iterator's base seed when its workers already run (persistent)."""
        self._mark_owner()

        def append(state: dict[str, Any]) -> int:
            state["runs"].append({"seed": seed, "workers": workers, "started": []})
            return int(state["first"]) + len(state["runs"]) - 1

        try:
            run = self._update(self.name(False), append)
        except OSError as exc:
            logger.debug("epoch ledger not written in %s: %s", self.folder, exc)
            run = 0 if self._last is None else self._last[0] + 1
        if self._last is not None and run <= self._last[0]:  # the file was lost meanwhile: keep counting
            run = self._last[0] + 1
        self._last = (run, workers)
        return run

    def latest(self) -> tuple[int, int] | None:
        """``(run, workers)`` of the last run of this generation (the owner's, or its workers'), or None."""
        last = self._last
        try:
            state = self._read(self.name(False))
        except OSError:
            state = None
        if state is not None and state["generation"] == self.generation and state["runs"]:
            run = int(state["first"]) + len(state["runs"]) - 1
            if last is None or run > last[0]:
                last = (run, int(state["runs"][-1]["workers"]))
        return last

    # -- a DataLoader worker -----------------------------------------------------------------------

    def claim(self, worker: int, workers: int, seed: int) -> int:
        """The run that this DataLoader worker's new iteration belongs to: the one its owner planned, else
        the earliest run of its DataLoader iterator (base ``seed``) that this worker has not started, else
        a new one.

        Raises:
            EpochLedgerError: The ledger cannot be written, and nothing else tells the epoch.
        """
        if self._mark is not None and self._unpickled_in == os.getpid():
            self._mark.drop()  # this copy was handed to a worker: it owns nothing
            self._mark = None
        name = self.name(True)
        plan = self.planned
        if plan is not None and (name, *plan) not in self._claimed:
            generation, run = plan
            self._claimed.add((name, generation, run))
            with contextlib.suppress(OSError, EpochLedgerError):
                self._update(name, lambda state: _join(state, run, worker, seed))
            return run

        def pick(state: dict[str, Any]) -> int:
            first, runs = int(state["first"]), state["runs"]
            for k, entry in enumerate(runs):
                mine = entry["seed"] == seed and entry["workers"] == workers
                if mine and worker not in entry["started"]:
                    entry["started"].append(worker)
                    return first + k
            runs.append({"seed": seed, "workers": workers, "started": [worker]})
            return first + len(runs) - 1

        try:
            run = self._update(name, pick)
        except OSError as exc:
            raise EpochLedgerError(
                f"DataLoader worker {worker} cannot count epochs in {self.folder} ({exc}): torch's "
                f"DataLoader gives its workers a fresh copy of the dataset, so they learn the epoch from "
                f"a file there. Set SHARDFLOW_CACHE_DIR to a writable folder, use StreamingDataLoader "
                f"without persistent_workers, or num_workers=0"
            ) from exc
        self._claimed.add((name, self.generation, run))
        return run


def _join(state: dict[str, Any], run: int, worker: int, seed: int) -> None:
    """Record that ``worker`` of the iterator with base ``seed`` started the planned ``run``."""
    k = run - int(state["first"])
    if 0 <= k < len(state["runs"]):
        entry = state["runs"][k]
        if entry["seed"] is None:
            entry["seed"] = seed
        if worker not in entry["started"]:
            entry["started"].append(worker)
