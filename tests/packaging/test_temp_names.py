"""format's writers and storage's local backend recognise each other's temporary files.

The writers remove leftover temporary files of theirs, and the local backend leaves temporary files out of
listings and copies. Neither package may import the other, so each defines ``TEMP_NAME`` (and makes
names with its own ``temp_path``); this test keeps the two in step.
"""

from __future__ import annotations

from pathlib import Path

from shardflow.format import _atomic as format_io
from shardflow.storage import _io as storage_io

FINALS = ["shard.00000.mds", "index.json", "shard.00012.mds.zstd", "a b.jsonl"]


def test_the_patterns_are_the_same() -> None:
    assert format_io.TEMP_NAME.pattern == storage_io.TEMP_NAME.pattern
    assert format_io.TEMP_NAME.flags == storage_io.TEMP_NAME.flags


def test_each_recognises_the_others_names(tmp_path: Path) -> None:
    for final in (tmp_path / name for name in FINALS):
        made = {
            "format": format_io.temp_path(final).name,
            "format, tagged": format_io.temp_path(final, "part").name,
            "storage": storage_io.temp_path(final).name,
        }
        for maker, name in made.items():
            assert format_io.TEMP_NAME.match(name), f"format does not recognise {name!r} from {maker}"
            assert storage_io.TEMP_NAME.match(name), f"storage does not recognise {name!r} from {maker}"
        assert not format_io.TEMP_NAME.match(final.name) and not storage_io.TEMP_NAME.match(final.name)
