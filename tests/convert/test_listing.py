"""``python -m shardflow.convert`` lists every converter with the command that runs it; every converter
module runs as ``python -m`` without a warning (runpy warns when the package imported it already)."""

from __future__ import annotations

import subprocess
import sys

from shardflow.convert.__main__ import CONVERTERS


def _run_all(commands: list[list[str]]) -> list[tuple[int, str, str]]:
    """Run the commands at once; (exit status, stdout, stderr) of each."""
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command in commands
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        results.append((process.returncode, out, err))
    return results


def test_every_converter_is_listed_and_answers_help_without_a_warning() -> None:
    python = [sys.executable, "-W", "error"]  # any warning, runpy's RuntimeWarning included, is an error
    modules = ["shardflow.convert", *(f"shardflow.convert.{name}" for name in CONVERTERS)]
    commands = [[*python, "-m", modules[0]]] + [[*python, "-m", module, "--help"] for module in modules[1:]]
    results = _run_all(commands)
    for module, (status, _, err) in zip(modules, results, strict=True):
        assert status == 0 and "Warning" not in err, (module, err)
    listing = results[0][1]
    for name in CONVERTERS:
        assert f"python -m shardflow.convert.{name} " in listing
    assert "dataframe_to_mds" in listing and "``" not in listing
    for _, out, _ in results[1:]:
        assert "--out" in out and "--workers" in out
