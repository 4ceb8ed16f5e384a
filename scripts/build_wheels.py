"""Build a wheel of every package under ``packages/`` and of the meta-package into one folder.

What ``hatch build -t wheel`` does in each project folder, with hatchling (the build backend that hatch
runs; ``pip install hatch`` brings it). Then, from that folder, on any machine with Python >= 3.10:

    python3 -m pip install --find-links dist 'shardflow[all]'

(the pinned siblings are found there; torch and the other third-party requirements come from the index).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from workspace import REPO, find_packages

__all__ = ["build_wheels"]


def build_wheels(out: Path) -> list[Path]:
    """Build the wheels into ``out`` (created if missing); returns the wheel files, meta-package last."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    built = []
    for project, dist in [*((p.path, p.dist) for p in find_packages()), (REPO, "shardflow")]:
        result = subprocess.run(
            [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
            cwd=project, capture_output=True, text=True,
        )
        if result.returncode:
            raise SystemExit(
                f"building the wheel of {project} failed ({result.returncode}); is hatchling installed "
                f"(python3 -m pip install hatch)?\n{result.stdout}{result.stderr}"
            )
        built += sorted(out.glob(f"{dist.replace('-', '_')}-*.whl"))
    return built


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=REPO / "dist", help="default: dist/")
    args = parser.parse_args()
    for wheel in build_wheels(args.out):
        print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
