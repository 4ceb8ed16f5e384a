"""webvid: WebVid's CSV and its downloaded videos into MDS, videos inside the shards or beside them.

The input is one of WebVid's CSV files (``results_2M_train.csv``, ``results_10M_val.csv``, ...: columns
``videoid,contentUrl,duration,page_dir,name``, and ``page_idx`` in the 10M ones) and ``--videos``, the
folder its download script filled: ``<videos>/<page_dir>/<videoid>.mp4`` (or ``<videos>/<videoid>.mp4``).
Each row whose video is there becomes one sample, with the columns of mosaicml-streaming's WebVid
converters: ``videoid``, ``name``, ``page_idx`` (when the CSV has it), ``page_dir``, ``contentUrl`` (str)
and ``duration`` (int seconds, from the CSV's ``PT00H00M17S``), plus

- ``--variant inside`` (default): ``content``, the video file's bytes (for ``StreamingInsideWebVid``);
- ``--variant outside``: ``content_path``, the video's path relative to ``--videos`` (for
  ``StreamingOutsideGIWebVid``/``StreamingOutsideDTWebVid``, whose ``extra_remote`` is that folder, or
  wherever it is uploaded); the videos are not copied.

Rows without a video (failed downloads) are logged and skipped, and counted in the summary; a malformed
row stops the conversion naming its line. Partitions are cut by the videos' sizes.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from shardflow.convert import _cli
from shardflow.convert._plan import Segment, Unit
from shardflow.convert._run import Converter, Options, Plan, Summary, convert
from shardflow.convert.errors import InputError

__all__ = ["WebVid", "webvid_to_mds", "parse_duration", "main", "VARIANTS", "REQUIRED"]

logger = logging.getLogger(__name__)

VARIANTS = ("inside", "outside")
REQUIRED = ("videoid", "contentUrl", "duration", "page_dir", "name")
"""The CSV's columns that every WebVid release has."""

_DURATION = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?$")


def parse_duration(text: str) -> int:
    """Seconds of an ISO 8601 duration as WebVid writes it (``PT00H00M17S``), or of a plain integer.

    Raises:
        ValueError: Neither form.
    """
    text = text.strip()
    if text.isdigit():
        return int(text)
    match = _DURATION.match(text)
    if match is None or not any(match.groups()):
        raise ValueError(f"duration {text!r} is not like PT00H00M17S")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


@dataclass
class WebVid(Converter):
    """Converts a WebVid CSV with its videos folder into ``inside`` or ``outside`` samples."""

    csv_path: str
    videos: str
    variant: str = "inside"
    name = "webvid"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"webvid: variant={self.variant!r}: give one of {', '.join(VARIANTS)}")
        self._bytes = 0

    def plan(self) -> Plan:
        if not os.path.isfile(self.csv_path):
            raise InputError(f"webvid: {self.csv_path} does not exist: give one of WebVid's CSV files")
        if not os.path.isdir(self.videos):
            raise InputError(
                f"webvid: --videos {self.videos} is not a folder: give the downloaded videos' folder"
            )
        units = []
        with open(self.csv_path, newline="", encoding="utf-8") as file:
            rows = csv.reader(file)
            header = next(rows, None) or []
            absent = [column for column in REQUIRED if column not in header]
            if absent:
                raise InputError(
                    f"webvid: {self.csv_path} has no column {', '.join(absent)} (its header: {header}): "
                    f"expected WebVid's {','.join(REQUIRED)}"
                )
            has_page_idx = "page_idx" in header
            for row in rows:
                if not row:
                    continue
                line = rows.line_num
                if len(row) != len(header):
                    raise InputError(
                        f"webvid: {self.csv_path}:{line}: {len(row)} fields, the header has {len(header)}"
                    )
                record = dict(zip(header, row, strict=True))
                try:
                    duration = parse_duration(record["duration"])
                except ValueError as err:
                    raise InputError(f"webvid: {self.csv_path}:{line}: {err}") from None
                info = [line, *(record[column] for column in _fields(has_page_idx)), duration]
                video = self._video(record["page_dir"], record["videoid"])
                if video is None:  # counted as skipped by the worker that gets it
                    units.append(Unit(self.csv_path, 0, info=info))
                else:
                    size = os.path.getsize(video) if self.variant == "inside" else 1
                    units.append(Unit(video, size, info=info))
        if not units:
            raise InputError(f"webvid: {self.csv_path} has no rows: nothing to convert")
        return Plan(units, _columns(has_page_idx, self.variant), inputs=[self.csv_path])

    def _video(self, page_dir: str, videoid: str) -> str | None:
        name = f"{videoid}.mp4"
        for path in (os.path.join(self.videos, page_dir, name), os.path.join(self.videos, name)):
            if os.path.isfile(path):
                return path
        return None

    def config(self) -> dict[str, Any]:
        return {
            "csv": os.path.abspath(self.csv_path),
            "--videos": os.path.abspath(self.videos),
            "--variant": self.variant,
        }

    def samples(
        self, segment: Segment, columns: dict[str, str], skipped: list[str]
    ) -> Iterator[dict[str, Any]]:
        line, *values, duration = segment.unit.info
        names = [name for name in columns if name not in ("duration", "content", "content_path")]
        sample: dict[str, Any] = dict(zip(names, values, strict=True))
        sample["duration"] = duration
        self._bytes = 0
        path = segment.unit.name
        if path == self.csv_path:
            logger.warning(
                "webvid: skipping %s:%d: no video %s in %s", path, line, sample["videoid"], self.videos
            )
            skipped.append(f"{path}:{line} (video {sample['videoid']} not found)")
            return
        if self.variant == "inside":
            try:
                with open(path, "rb") as file:
                    sample["content"] = file.read()
            except OSError as err:
                raise InputError(f"webvid: cannot read {path}: {err}") from None
            self._bytes = len(sample["content"])
        else:
            sample["content_path"] = os.path.relpath(path, self.videos).replace(os.sep, "/")
        yield {name: sample[name] for name in columns}

    def where(self, segment: Segment, produced: int) -> str:
        return f"{self.csv_path}:{segment.unit.info[0]}"

    def tally(self, segment: Segment, produced: int) -> tuple[str, dict[str, int]]:
        return self.csv_path, {"rows": 1, "videos": produced, "video bytes": self._bytes}


def _fields(has_page_idx: bool) -> list[str]:
    """The CSV's string fields that become columns, in the columns' order."""
    return ["videoid", "name", *(["page_idx"] if has_page_idx else []), "page_dir", "contentUrl"]


def _columns(has_page_idx: bool, variant: str) -> dict[str, str]:
    """The columns written, in mosaicml-streaming's order."""
    columns = {name: "str" for name in _fields(has_page_idx)}
    content_url = columns.pop("contentUrl")
    columns["duration"] = "int"
    columns["contentUrl"] = content_url
    columns["content" if variant == "inside" else "content_path"] = "bytes" if variant == "inside" else "str"
    return columns


def webvid_to_mds(csv_path: str, videos: str, options: Options, *, variant: str = "inside") -> Summary:
    """Convert a WebVid CSV and its videos folder into an MDS dataset at ``options.out``."""
    return convert(WebVid(csv_path, videos, variant), options)


def _parser() -> argparse.ArgumentParser:
    cli = _cli.parser("webvid", __doc__ or "")
    cli.add_argument("csv", help="a WebVid CSV file (videoid,contentUrl,duration,page_dir,name[,page_idx])")
    cli.add_argument(
        "--videos", required=True, help="the downloaded videos: <videos>/<page_dir>/<videoid>.mp4"
    )
    cli.add_argument(
        "--variant",
        choices=VARIANTS,
        default="inside",
        help="video bytes in the shards, or paths beside them",
    )
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``python -m shardflow.convert.webvid CSV --videos DIR --out OUT``."""
    return _cli.main(_parser(), lambda args: WebVid(args.csv, args.videos, args.variant), argv)


if __name__ == "__main__":
    raise SystemExit(main())
