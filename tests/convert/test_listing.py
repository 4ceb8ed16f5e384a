"""``python -m shardflow.convert`` lists every converter with the command that runs it."""

from __future__ import annotations

import subprocess
import sys

from shardflow.convert.__main__ import CONVERTERS


def test_every_converter_is_listed_and_answers_help() -> None:
    listing = subprocess.run(
        [sys.executable, "-m", "shardflow.convert"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    for name in CONVERTERS:
        assert f"python -m shardflow.convert.{name} " in listing
    assert "dataframe_to_mds" in listing and "``" not in listing
    for name in CONVERTERS:
        result = subprocess.run(
            [sys.executable, "-m", f"shardflow.convert.{name}", "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0 and "--out" in result.stdout and "--workers" in result.stdout
