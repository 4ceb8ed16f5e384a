"""The conversion engine: plan, partitions converted in worker processes, merge, summary.

A :class:`Converter` lists its input as units (:mod:`shardflow.convert._plan`) and reads the samples of a
segment. :func:`convert` splits the units into partitions, converts each into ``out/part.NNNNN/`` with an
:class:`~shardflow.format.MDSWriter` (in ``workers`` processes), and merges their indexes in order into
``out/index.json``. A partition is finished when its ``index.json`` exists; ``resume=True`` keeps those,
after checking (:mod:`shardflow.convert._record`) that the input and the output options are the ones
recorded in ``convert.json`` by the run that started the conversion. A dataset published as splits
(CIFAR-10, COCO, ADE20K) has a :class:`SplitConverter` per split (:func:`split_converters`), each
converted by :func:`convert_each` into ``out/<split>/``.
"""

from __future__ import annotations

import concurrent.futures as futures
import logging
import multiprocessing
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from shardflow.convert import _record
from shardflow.convert._plan import Segment, Unit, split, units_digest
from shardflow.convert._target import PLAN_NAME, Target, part_name
from shardflow.convert.errors import InputError, OutputExistsError
from shardflow.format import FormatError, MDSWriter, merge_index, parse_size

__all__ = [
    "Converter",
    "SplitConverter",
    "Plan",
    "Options",
    "Summary",
    "convert",
    "convert_each",
    "split_converters",
    "sub_out",
]

logger = logging.getLogger(__name__)

_REPORT_EVERY = 0.2  # seconds between progress reports of a worker


@dataclass
class Plan:
    """What a converter found in its input: the units in order, the columns, files to write beside the index.

    ``samples`` is the number of samples when known in advance (for the progress bar), else None.
    ``inputs`` are the files the output depends on besides the units' (fingerprinted for ``--resume``).
    """

    units: list[Unit]
    columns: dict[str, str]
    files: dict[str, Any] = field(default_factory=dict)
    samples: int | None = None
    inputs: list[str] = field(default_factory=list)


class Converter:
    """Base of the converters. Subclasses are picklable (they travel to worker processes).

    ``plan`` runs once, in the calling process; ``samples`` runs in the workers, once per segment.
    """

    name = "converter"

    def plan(self) -> Plan:
        """List the input; raise :class:`InputError` naming what is missing or wrong."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The settings that shape the output (named as their options), recorded for ``--resume`` to check."""
        return {}

    def samples(
        self, segment: Segment, columns: dict[str, str], skipped: list[str]
    ) -> Iterator[dict[str, Any]]:
        """The samples of ``segment``, in order; append a description of each skipped item to ``skipped``."""
        raise NotImplementedError

    def where(self, segment: Segment, produced: int) -> str:
        """Where the sample after the ``produced`` first ones of ``segment`` came from, for messages."""
        return f"{segment.unit.name} (item {segment.start + produced})"

    def tally(self, segment: Segment, produced: int) -> tuple[str, dict[str, int]]:
        """What reading ``segment`` (all of it, ``produced`` samples written) consumed, for the summary:
        the input it counts under and counts by kind, e.g. ``('a.jsonl', {'lines': 9, 'bytes': 512})``."""
        return segment.unit.name, {"samples": produced}

    def skip(self, location: str, problem: str, skipped: list[str]) -> bool:
        """Whether to skip a sample the writer refused (then log it and append it to ``skipped``)."""
        return False


@dataclass
class SplitConverter(Converter):
    """A converter of one split of the dataset folder ``root``; :func:`split_converters` makes one per split.

    A subclass names its splits in ``splits`` (in the order they are converted) and calls
    :meth:`check_split` first in its ``plan``.
    """

    root: str
    split: str = "train"
    splits: ClassVar[tuple[str, ...]] = ()

    def check_split(self) -> None:
        """Raise :class:`InputError` when ``split`` is not one of ``splits``."""
        _check_split(self.name, self.split, self.splits)

    def config(self) -> dict[str, Any]:
        return {"root": os.path.abspath(self.root), "--split": self.split}


def split_converters(kind: type[SplitConverter], root: str, split: str | None = None) -> dict[str, Converter]:
    """A ``kind`` converter of ``root`` per split (only ``split`` when given), by split name, for
    :func:`convert_each`.

    Raises:
        InputError: ``split`` is not one of ``kind.splits``.
    """
    if split is not None:
        _check_split(kind.name, split, kind.splits)
    return {name: kind(root, name) for name in kind.splits if split in (None, name)}


def _check_split(converter: str, split: str, splits: tuple[str, ...]) -> None:
    if split not in splits:
        raise InputError(f"{converter}: split {split!r} is not one of {sorted(splits)}")


@dataclass
class Options:
    """Where and how to write: the options every converter shares."""

    out: str
    compression: str | None = None
    hashes: list[str] | None = None
    size_limit: int | str | None = 1 << 26
    workers: int = 1
    partitions: int | None = None
    resume: bool = False
    progress: bool | None = None  # None: when stderr is a terminal


@dataclass
class Summary:
    """What a conversion wrote (the whole dataset, finished partitions of earlier runs included), and what
    this run read: ``read`` maps each input (a file; an image folder's root) to counts by kind."""

    samples: int
    shards: int
    bytes: int
    seconds: float
    skipped: list[str]
    partitions: int
    reused: int
    read: dict[str, dict[str, int]] = field(default_factory=dict)

    def describe(self, name: str, out: str) -> str:
        """The closing summary: one line for the dataset, then one per input."""
        rate = self.samples / self.seconds if self.seconds > 0 else 0.0
        skipped = f", {len(self.skipped)} skipped" if self.skipped else ""
        reused = f", {self.reused} of {self.partitions} partitions reused" if self.reused else ""
        lines = [
            f"{name}: {self.samples} samples in {self.shards} shards, {self.bytes / 1e6:.1f} MB, to {out} "
            f"in {format_seconds(self.seconds)} ({rate:,.0f} samples/s{skipped}{reused})"
        ]
        if self.read:
            lines.append(f"read{' by this run (not the reused partitions)' if self.reused else ''}:")
        for source, counts in self.read.items():
            lines.append(f"  {source}: " + ", ".join(f"{count:,} {kind}" for kind, count in counts.items()))
        return "\n".join(lines)


def format_seconds(seconds: float) -> str:
    """A duration for people: ``"12 ms"``, ``"0.35 s"``, ``"4.2 s"``, ``"93 s"``."""
    if seconds < 0.1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.2f} s" if seconds < 1 else f"{seconds:.1f} s"
    return f"{seconds:.0f} s"


def default_partitions(plan: Plan, options: Options) -> int:
    """The partitions of a conversion without ``--partitions``: 4 per worker, fewer for a small input.

    Each partition writes shards of its own, so a partition holding less than one ``size_limit`` of input
    makes an under-full shard: the count is at most the input's bytes (its files as stored) over
    ``size_limit``, at least 1. Without a size limit, or when an input's size is unknown, 4 per worker.
    """
    most = 4 * options.workers
    limit = parse_size(options.size_limit) if options.size_limit is not None else None
    if not limit:
        return most
    try:
        stored = sum(os.path.getsize(name) for name in {unit.name for unit in plan.units})
    except OSError:
        return most
    count = max(1, min(most, -(-stored // limit)))
    if count < most:
        logger.info(
            "%d partition%s, not %d (4 per worker): the input is %.1f MB, --size-limit %.1f MB",
            count, "" if count == 1 else "s", most, stored / 1e6, limit / 1e6,
        )
    return count


@dataclass
class _Part:
    number: int
    samples: int
    skipped: list[str]
    read: dict[str, dict[str, int]]


def _add(read: dict[str, dict[str, int]], source: str, counts: dict[str, int]) -> None:
    """Add ``counts`` to the counts of ``source`` in ``read``."""
    total = read.setdefault(source, {})
    for kind, count in counts.items():
        total[kind] = total.get(kind, 0) + count


# -- worker side -------------------------------------------------------------------------------------------

_report: Callable[[int], None] = lambda count: None  # noqa: E731  (set per process by _start_worker)
_parent = 0


def _start_worker(progress: Any, parent: int, level: int) -> None:
    global _report, _parent
    _report, _parent = progress.put, parent
    logging.basicConfig(level=level, format="%(message)s")


def _convert_part(
    converter: Converter,
    columns: dict[str, str],
    number: int,
    segments: list[Segment],
    out: str,
    writer: dict[str, Any],
) -> _Part:
    """Convert one partition into ``out``; its ``index.json`` is written last, only on success."""
    shard_writer = MDSWriter(out=out, columns=columns, **writer)
    skipped: list[str] = []
    read: dict[str, dict[str, int]] = {}
    count = reported = 0
    last = time.monotonic()
    for segment in segments:
        produced = 0
        for sample in converter.samples(segment, columns, skipped):
            try:
                shard_writer.write(sample)
            except FormatError as err:
                location = converter.where(segment, produced)
                if converter.skip(location, str(err), skipped):
                    continue
                raise InputError(f"{location}: {err}") from None
            produced += 1
            if produced & 255 == 0 and time.monotonic() - last > _REPORT_EVERY:
                _check_parent()
                _report(count + produced - reported)
                reported, last = count + produced, time.monotonic()
        count += produced
        _add(read, *converter.tally(segment, produced))
    shard_writer.finish()  # Not a `with`: the writers finish (write index.json) even when the block raises.
    _report(count - reported)
    return _Part(number, count, skipped, read)


def _check_parent() -> None:
    """Stop a worker whose parent died (killed): its partition stays unfinished, for --resume to redo."""
    if _parent and os.getppid() != _parent:
        os._exit(1)


# -- calling side ------------------------------------------------------------------------------------------


def convert(converter: Converter, options: Options) -> Summary:
    """Convert ``converter``'s input into an MDS dataset at ``options.out``.

    Raises:
        InputError: The input is missing or malformed; nothing is left at ``out`` (an interrupted
            ``--resume`` run keeps the partitions finished before).
        OutputExistsError: ``out`` is not empty and ``resume`` is false, or it holds a conversion of other
            input or options (the message names each difference; ``out`` is left as it was).
    """
    start = time.perf_counter()
    if options.workers < 1:
        raise ValueError(f"workers={options.workers}: give 1 or more")
    plan = converter.plan()
    target = Target(options.out)
    recorded = target.read_json(PLAN_NAME) if options.resume else None
    if recorded is None and not target.is_empty():
        raise OutputExistsError(
            f"--out {target} is not empty: choose an empty or new location, or pass --resume to finish an "
            f"interrupted conversion of the same input into it"
        )
    current = _describe_run(converter, plan, options)  # reads the input: after the cheap checks
    if recorded is not None:
        _check_resume(target, recorded, current, options.partitions)
    if recorded:
        count = int(recorded["partitions"])
    else:
        count = options.partitions or default_partitions(plan, options)
    parts = split(plan.units, count)
    if recorded is None:
        target.write_json(PLAN_NAME, {**current, "partitions": count})
    done, unfinished = target.partitions()
    expected = {part_name(k) for k in range(len(parts))}
    for name in sorted(unfinished | (done - expected)):
        logger.info("removing the unfinished partition %s", target.url(name))
        target.remove(name)
    done &= expected
    todo = [k for k in range(len(parts)) if part_name(k) not in done]
    if done:
        logger.info(
            "resuming: %d of %d partitions are finished, converting %d", len(done), len(parts), len(todo)
        )
    writer = {"compression": options.compression, "hashes": options.hashes, "size_limit": options.size_limit}
    try:
        results = _run_parts(converter, plan, parts, todo, target, writer, options)
        for name, value in plan.files.items():
            target.write_json(name, value)
        merge_index([target.url(f"{part_name(k)}/index.json") for k in range(len(parts))], options.out)
    except Exception:
        if recorded is None:
            target.remove()  # A fresh run that failed leaves nothing behind.
        else:
            _remove_unfinished(target)
        raise
    except BaseException:
        _remove_unfinished(target)  # Interrupted: the finished partitions stay, for --resume.
        raise
    return _summary(target, results, len(parts), len(done), time.perf_counter() - start)


def convert_each(converters: dict[str, Converter], options: Options) -> dict[str, Summary]:
    """Convert each of ``converters`` into its sub-folder ``<options.out>/<name>``, in order.

    When one fails, the sub-folders converted before it by this call are removed too, unless resuming.
    """
    summaries: dict[str, Summary] = {}
    fresh: list[Target] = []
    try:
        for name, converter in converters.items():
            part = replace(options, out=sub_out(options.out, name))
            summaries[name] = convert(converter, part)
            if not options.resume:
                fresh.append(Target(part.out))
    except Exception:
        for target in fresh:
            target.remove()
        raise
    return summaries


def sub_out(out: str, name: str) -> str:
    """The sub-folder ``name`` of ``out`` (a local folder or a URL)."""
    return f"{out.rstrip('/')}/{name}"


def _describe_run(converter: Converter, plan: Plan, options: Options) -> dict[str, Any]:
    """What ``convert.json`` records of a run (less the partition count); see :mod:`._record`."""
    output = {
        "--compression": options.compression,
        "--hashes": list(options.hashes or []),
        "--size-limit": parse_size(options.size_limit),
        "columns": plan.columns,
        **converter.config(),
    }
    files = [unit.name for unit in plan.units] + plan.inputs
    return {
        "version": _record.VERSION,
        "converter": converter.name,
        "options": output,
        "inputs": _record.input_fingerprints(files),
        "units": units_digest(plan.units),
    }


def _check_resume(
    target: Target, recorded: dict[str, Any], current: dict[str, Any], partitions: int | None
) -> None:
    """Refuse to resume the ``recorded`` conversion at ``target`` as ``current``, naming what differs."""
    found = _record.differences(recorded, current)
    if partitions is not None and partitions != recorded.get("partitions"):
        found.append(f"--partitions: {recorded.get('partitions')} then, {partitions} now")
    if found:
        raise OutputExistsError(
            f"--out {target} holds a {recorded.get('converter')} conversion of other input or options "
            f"(recorded in its {PLAN_NAME}), so --resume would mix them: "
            + "; ".join(found)
            + ". Resume with the same input and options, or choose another --out; nothing there was changed"
        )


def _remove_unfinished(target: Target) -> None:
    _, unfinished = target.partitions()
    for name in sorted(unfinished):
        target.remove(name)


def _run_parts(
    converter: Converter,
    plan: Plan,
    parts: list[list[Segment]],
    todo: list[int],
    target: Target,
    writer: dict[str, Any],
    options: Options,
) -> list[_Part]:
    """Convert the partitions ``todo``: in this process for one worker, else in a process pool."""
    from tqdm import tqdm

    show = sys.stderr.isatty() if options.progress is None else options.progress
    total = plan.samples if plan.samples is not None and len(todo) == len(parts) else None
    jobs = [(converter, plan.columns, k, parts[k], target.url(part_name(k)), writer) for k in todo]

    def bar() -> Any:
        return tqdm(total=total, unit=" samples", disable=not show, file=sys.stderr, desc=converter.name)

    if options.workers > 1 and len(todo) > 1:
        return _run_pool(jobs, min(options.workers, len(todo)), bar)
    global _report
    with bar() as progress:
        _report = progress.update
        return [_convert_part(*job) for job in jobs]


def _run_pool(jobs: list[tuple[Any, ...]], workers: int, make_bar: Callable[[], Any]) -> list[_Part]:
    # fork when this process runs no other thread (cheap: no re-import per worker); else forkserver.
    method = "fork" if threading.active_count() == 1 and sys.platform == "linux" else "forkserver"
    context = multiprocessing.get_context(
        method if method in multiprocessing.get_all_start_methods() else "spawn"
    )
    progress = context.Queue()
    pool = futures.ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(progress, os.getpid(), logging.getLogger().getEffectiveLevel()),
    )
    bar = None
    try:
        pending = {pool.submit(_convert_part, *job) for job in jobs}  # Starts the workers.
        bar = make_bar()
        results = []
        while pending:
            finished, pending = futures.wait(pending, timeout=0.1, return_when=futures.FIRST_COMPLETED)
            _drain(progress, bar)
            for future in finished:
                results.append(future.result())  # The first failure raises here.
        _drain(progress, bar)
        return sorted(results, key=lambda part: part.number)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()


def _drain(progress: Any, bar: Any) -> None:
    while True:
        try:
            bar.update(progress.get_nowait())
        except queue.Empty:
            return


def _summary(target: Target, results: list[_Part], partitions: int, reused: int, seconds: float) -> Summary:
    index = target.read_json("index.json") or {"shards": []}
    shards = index["shards"]
    size = 0
    for shard in shards:
        for kind in ("data", "meta"):
            stored = shard.get(f"zip_{kind}") or shard.get(f"raw_{kind}")
            size += stored["bytes"] if stored else 0
    skipped = [item for part in results for item in part.skipped]
    samples = sum(shard["samples"] for shard in shards)
    read: dict[str, dict[str, int]] = {}
    for part in results:
        for source, counts in part.read.items():
            _add(read, source, counts)
    return Summary(samples, len(shards), size, seconds, skipped, partitions, reused, read)
