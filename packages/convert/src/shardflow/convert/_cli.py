"""What every converter's command line shares: the options, ``--columns`` parsing, logging, exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from shardflow.convert._run import (
    Converter,
    Options,
    SplitConverter,
    Summary,
    convert,
    convert_each,
    split_converters,
    sub_out,
)
from shardflow.convert.errors import ConvertError, InputError

__all__ = ["parser", "parse_columns", "parse_map", "main", "split_main"]

logger = logging.getLogger("shardflow.convert")


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every converter shares; the caller adds its inputs."""
    cli = argparse.ArgumentParser(
        prog=f"python -m shardflow.convert.{name}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    out = cli.add_argument_group("output (shared by every converter)")
    out.add_argument(
        "--out", required=True, help="the dataset folder: a local path or a storage URL (s3://...)"
    )
    out.add_argument(
        "--compression", default=None, help="compress the shards, e.g. zstd or zstd:7 (default: none)"
    )
    out.add_argument(
        "--hashes", default="", help="comma-separated hashes to record per file, e.g. sha1,xxh64"
    )
    out.add_argument(
        "--size-limit", default="64mb", help="bytes per shard before starting a new one (e.g. 64mb)"
    )
    out.add_argument("--workers", type=int, default=1, help="processes converting partitions in parallel")
    out.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="partitions to split the input into (default: 4 per worker, fewer for an input smaller than "
        "that many --size-limit: each partition writes shards of its own)",
    )
    out.add_argument("--resume", action="store_true", help="finish an interrupted conversion into --out")
    out.add_argument(
        "--progress",
        choices=["auto", "always", "never"],
        default="auto",
        help="a progress bar on stderr: when it is a terminal (auto), always, or never",
    )
    out.add_argument("--quiet", action="store_true", help="log only warnings and errors")
    return cli


def options(args: argparse.Namespace) -> Options:
    """The shared options of parsed ``args``."""
    size: int | str = int(args.size_limit) if str(args.size_limit).isdigit() else args.size_limit
    return Options(
        out=args.out,
        compression=args.compression or None,
        hashes=[h.strip() for h in args.hashes.split(",") if h.strip()] or None,
        size_limit=size,
        workers=args.workers,
        partitions=args.partitions,
        resume=args.resume,
        progress={"auto": None, "always": True, "never": False}[args.progress],
    )


def parse_columns(text: str | None) -> dict[str, str]:
    """Parse ``name:encoding,...``, e.g. ``x:bytes,y:int,t:ndarray:uint8:32,32,3``, into a dict.

    Commas separate columns, except inside a shape (a piece without ``:`` continues the one before).
    """
    from shardflow.format import is_mds_encoding

    columns: dict[str, str] = {}
    pieces: list[str] = []
    for piece in (text or "").split(","):
        if ":" not in piece and pieces:
            pieces[-1] += "," + piece
        elif piece.strip():
            pieces.append(piece.strip())
    for piece in pieces:
        name, _, encoding = piece.partition(":")
        if not name or not encoding:
            raise InputError(f"--columns: {piece!r} is not name:encoding (e.g. text:str,label:int64)")
        if not is_mds_encoding(encoding):
            raise InputError(f"--columns: column {name!r} has unknown encoding {encoding!r}")
        columns[name] = encoding
    return columns


def parse_map(text: str | None) -> dict[str, str]:
    """Parse ``column=field,...`` (e.g. ``text=content``): output column name to input field name."""
    mapping: dict[str, str] = {}
    for piece in (text or "").split(","):
        if not piece.strip():
            continue
        name, sep, source = piece.partition("=")
        if not sep or not name.strip() or not source.strip():
            raise InputError(f"--map: {piece!r} is not column=field (e.g. text=content)")
        mapping[name.strip()] = source.strip()
    return mapping


def main(
    cli: argparse.ArgumentParser,
    build: Callable[[argparse.Namespace], Converter | dict[str, Converter]],
    argv: Sequence[str] | None,
) -> int:
    """Parse ``argv``, convert, log the summary; 0 on success, 1 (with a one-line message) on bad input.

    ``build`` gives one converter, or several by sub-folder of ``--out`` (see :func:`convert_each`).
    """
    args = cli.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr
    )
    try:
        built = build(args)
        if isinstance(built, dict):
            summaries = convert_each(built, options(args))
            done: list[tuple[Converter, str, Summary]] = [
                (built[name], sub_out(args.out, name), summary) for name, summary in summaries.items()
            ]
        else:
            done = [(built, args.out, convert(built, options(args)))]
    except (ConvertError, ValueError, OSError) as err:  # FormatError is a ValueError
        logger.error("%s: error: %s", cli.prog, err)
        return 1
    except KeyboardInterrupt:
        logger.error("%s: interrupted; run again with --resume to finish", cli.prog)
        return 130
    for converter, out, summary in done:
        logger.info("%s", summary.describe(converter.name, out))
    return 0


def split_main(
    kind: type[SplitConverter], description: str, root_help: str, argv: Sequence[str] | None
) -> int:
    """The command line of a :class:`SplitConverter`: ``ROOT --out OUT [--split NAME]``, each split (or
    the one named) into ``OUT/<split>``."""
    cli = parser(kind.name, description)
    cli.add_argument("root", help=root_help)
    every = "both" if len(kind.splits) == 2 else "all"
    cli.add_argument(
        "--split",
        choices=sorted(kind.splits),
        default=None,
        help=f"convert only this split, into OUT/<split> (default: {every}, into "
        + " and ".join(f"OUT/{name}" for name in kind.splits)
        + ")",
    )
    return main(cli, lambda args: split_converters(kind, args.root, args.split), argv)
