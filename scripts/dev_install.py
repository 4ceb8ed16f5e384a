"""Install every package under ``packages/`` into this Python, editable: the first step of a hatch env.

hatch runs this before it installs the meta-package (``pre-install-commands``), because the meta pins
packages that are on no index. Every ``packages/*`` goes into one pip command (pip only finds the
siblings that a package pins when they are in the same command), with its ``[all]`` extra when it
declares one; ``--extras format=images+xxhash,storage=s3`` installs only the extras named instead (the
demo's lean environment). When any of them needs torch, ``torch==2.13.0`` is installed first, on its
own: a bare ``torch`` requirement resolved alongside the rest can pull a CUDA build of several GB, while
on the project's machines this pin takes the CPU wheel that lies on their disk. ``SHARDFLOW_TORCH``
overrides the pin (elsewhere, e.g. ``SHARDFLOW_TORCH="torch --index-url https://download.pytorch.org/whl/cpu"``),
and ``--torch 2.7.0`` pins another version (the Composer environment); ``--print`` shows the commands only.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

from workspace import Package, find_packages, requirement_name

TORCH = os.environ.get("SHARDFLOW_TORCH", "torch==2.13.0")


def parse_extras(spec: str, packages: list[Package]) -> dict[str, tuple[str, ...]]:
    """``"format=images+xxhash,storage=s3"`` -> ``{"format": ("images", "xxhash"), "storage": ("s3",)}``."""
    chosen: dict[str, tuple[str, ...]] = {}
    names = {package.name: package for package in packages}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, extras = item.partition("=")
        if not sep or name not in names or not extras:
            raise SystemExit(
                f"--extras {spec!r}: {item!r} is not PACKAGE=EXTRA[+EXTRA...], PACKAGE in {sorted(names)}"
            )
        try:
            for extra in extras.split("+"):
                names[name].requirements(extra)
        except ValueError as error:
            raise SystemExit(f"--extras {spec!r}: {error}") from None
        chosen[name] = tuple(extras.split("+"))
    return chosen


def pip_commands(
    packages: list[Package], extras: dict[str, tuple[str, ...]] | None = None, torch: str = TORCH
) -> list[list[str]]:
    """The pip commands that install ``packages``: torch first when one needs it, then all of them.

    Each package gets its ``[all]`` extra, or with ``extras`` only the ones named for it there (if any);
    ``torch`` is the requirement (and pip options) torch is installed with.
    """
    chosen: dict[str, tuple[str, ...]] = {
        p.name: ((p.install_extra,) if p.install_extra else ()) if extras is None else extras.get(p.name, ())
        for p in packages
    }
    requirements = [r for p in packages for extra in (None, *chosen[p.name]) for r in p.requirements(extra)]
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    commands = []
    if any(requirement_name(r) == "torch" for r in requirements):
        commands.append([*pip, *shlex.split(torch)])
    editables = []
    for package in packages:
        extra = ",".join(chosen[package.name])
        editables += ["-e", f"{package.path}[{extra}]" if extra else str(package.path)]
    commands.append([*pip, *editables])
    return commands


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the pip commands, run nothing")
    parser.add_argument("--extras", metavar="PKG=EXTRA,...",
                        help="install only these extras (default: every package's [all])")
    parser.add_argument("--torch", metavar="VERSION",
                        help=f"install torch==VERSION (default: {TORCH!r}, or $SHARDFLOW_TORCH)")
    args = parser.parse_args()
    packages = find_packages()
    extras = None if args.extras is None else parse_extras(args.extras, packages)
    torch = TORCH if args.torch is None else f"torch=={args.torch}"
    for command in pip_commands(packages, extras, torch):
        if args.print:
            print(shlex.join(command))
            continue
        result = subprocess.run(command)
        if result.returncode:
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
