"""Run mypy over every package under ``packages/`` (``mypy -p shardflow.<name>`` each); extra args pass on."""

from __future__ import annotations

import subprocess
import sys

from workspace import find_packages


def mypy_command(args: list[str]) -> list[str]:
    """The mypy command line for every package, then ``args``."""
    command = [sys.executable, "-m", "mypy"]
    for package in find_packages():
        command += ["-p", package.module]
    return command + args


if __name__ == "__main__":
    sys.exit(subprocess.run(mypy_command(sys.argv[1:])).returncode)
