"""Install every package under ``packages/`` into this Python, editable: the dev environment's first step.

hatch runs this before it installs the meta-package (``pre-install-commands``), because the meta pins
packages that are on no index. Every ``packages/*`` goes into one pip command (pip only finds the
siblings that a package pins when they are in the same command), with its ``[all]`` extra when it
declares one. When any of them needs torch, ``torch==2.13.0`` is installed first, on its own: a bare
``torch`` requirement resolved alongside the rest can pull a CUDA build of several GB, while this pin
takes the CPU wheel. ``SHARDFLOW_TORCH`` overrides the pin; ``--print`` shows the commands only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from workspace import Package, find_packages, requirement_name

TORCH = os.environ.get("SHARDFLOW_TORCH", "torch==2.13.0")


def pip_commands(packages: list[Package]) -> list[list[str]]:
    """The pip commands that install ``packages``: torch first when one needs it, then all of them."""
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    commands = []
    if any(requirement_name(r) == "torch" for p in packages for r in p.installed_requirements()):
        commands.append([*pip, TORCH])
    editables = []
    for package in packages:
        extra = f"[{package.install_extra}]" if package.install_extra else ""
        editables += ["-e", f"{package.path}{extra}"]
    commands.append([*pip, *editables])
    return commands


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the pip commands, run nothing")
    args = parser.parse_args()
    for command in pip_commands(find_packages()):
        if args.print:
            print(" ".join(command))
            continue
        result = subprocess.run(command)
        if result.returncode:
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
