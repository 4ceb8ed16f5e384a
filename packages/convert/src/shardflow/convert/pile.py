"""pile: the Pile's JSON-lines files into MDS ``{text: str, pile_set_name: str}``, one split per sub-folder.

The input is the Pile's root folder as published: ``train/00.jsonl.zst`` .. ``train/29.jsonl.zst``,
``val.jsonl.zst`` and ``test.jsonl.zst`` (uncompressed ``.jsonl`` files are read too). Each line is
``{"text": ..., "meta": {"pile_set_name": ...}}``. The splits found are converted into the ``train/``,
``val/`` and ``test/`` sub-folders of ``--out`` (the layout mosaicml-streaming's Pile converter makes);
``--split`` converts only the ones named. The columns are those its ``StreamingPile`` reads. A line that
is not such an object stops the conversion naming its file and line; ``--skip-bad`` skips and counts it.
Each file goes whole to one partition (a compressed file cannot be split), so the train split converts in
parallel over its files; the summary counts the lines and bytes read per file.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from shardflow.convert import _cli
from shardflow.convert._plan import Segment
from shardflow.convert._run import Converter, Options, Plan, Summary, convert_each
from shardflow.convert.errors import InputError
from shardflow.convert.jsonl import JSONLines

__all__ = ["Pile", "pile_to_mds", "pile_splits", "main", "COLUMNS", "SPLITS"]

COLUMNS = {"text": "str", "pile_set_name": "str"}
"""The columns written (those of mosaicml-streaming's Pile converter)."""

SPLITS = ("train", "val", "test")
_READ = {"text": "json", "meta": "json"}  # the fields each line gives, checked here rather than by JSONLines
_SUFFIXES = (".jsonl.zst", ".jsonl")


@dataclass
class Pile(JSONLines):
    """Converts Pile JSON-lines files (one split) into ``{text, pile_set_name}``."""

    columns: dict[str, str] = field(default_factory=lambda: dict(_READ))
    name = "pile"

    def plan(self) -> Plan:
        plan = super().plan()
        plan.columns = dict(COLUMNS)
        return plan

    def samples(
        self, segment: Segment, columns: dict[str, str], skipped: list[str]
    ) -> Iterator[dict[str, Any]]:
        for record in super().samples(segment, _READ, skipped):
            text, meta = record["text"], record["meta"]
            problem = None
            if not isinstance(text, str):
                problem = f"'text' is a JSON {type(text).__name__}, not a string"
            elif not isinstance(meta, dict) or not isinstance(meta.get("pile_set_name"), str):
                problem = "'meta' is not an object with a string 'pile_set_name'"
            if problem is None:
                yield {"text": text, "pile_set_name": meta["pile_set_name"]}
            elif not self.skip(self.where(segment, 0), problem, skipped):
                raise InputError(f"pile: {self.where(segment, 0)}: {problem}; fix it or pass --skip-bad")


def pile_splits(root: str, splits: Sequence[str] = SPLITS) -> dict[str, list[str]]:
    """The files of each split found under the Pile's ``root``: ``train/*.jsonl[.zst]`` (sorted), ``val`` and
    ``test`` (``val.jsonl.zst`` or ``val.jsonl``, ...).

    Raises:
        InputError: ``root`` is not a folder, a split named in ``splits`` is unknown, or none is there.
    """
    if not os.path.isdir(root):
        raise InputError(f"pile: {root} is not a folder: give the Pile's root (train/, val.jsonl.zst, ...)")
    unknown = [name for name in splits if name not in SPLITS]
    if unknown:
        raise InputError(f"pile: unknown split {', '.join(unknown)}: choose among {', '.join(SPLITS)}")
    found: dict[str, list[str]] = {}
    for split in splits:
        if split == "train":
            folder = os.path.join(root, "train")
            names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
            files = [
                os.path.join(folder, n) for n in names if n.endswith(_SUFFIXES) and not n.startswith(".")
            ]
        else:
            candidates = [os.path.join(root, split + suffix) for suffix in _SUFFIXES]
            files = [path for path in candidates if os.path.isfile(path)][:1]
        if files:
            found[split] = files
    if not found:
        raise InputError(
            f"pile: {root} holds none of {', '.join(splits)}: expected train/00.jsonl.zst ..., "
            "val.jsonl.zst, test.jsonl.zst"
        )
    return found


def _converters(root: str, splits: Sequence[str], skip_bad: bool) -> dict[str, Converter]:
    return {name: Pile(files, skip_bad=skip_bad) for name, files in pile_splits(root, splits).items()}


def pile_to_mds(
    root: str, options: Options, *, splits: Sequence[str] = SPLITS, skip_bad: bool = False
) -> dict[str, Summary]:
    """Convert the Pile at ``root`` into ``<options.out>/<split>`` for each split found among ``splits``."""
    return convert_each(_converters(root, splits, skip_bad), options)


def _parser() -> argparse.ArgumentParser:
    cli = _cli.parser("pile", __doc__ or "")
    cli.add_argument("root", help="the Pile's root folder: train/NN.jsonl.zst, val.jsonl.zst, test.jsonl.zst")
    cli.add_argument(
        "--split", action="append", choices=SPLITS, help="convert this split only (repeatable; default: all)"
    )
    cli.add_argument("--skip-bad", action="store_true", help="skip (and count) bad lines instead of failing")
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``python -m shardflow.convert.pile ROOT --out OUT``."""
    return _cli.main(
        _parser(), lambda args: _converters(args.root, args.split or SPLITS, args.skip_bad), argv
    )


if __name__ == "__main__":
    raise SystemExit(main())
