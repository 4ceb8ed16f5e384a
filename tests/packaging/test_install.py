"""The install lines of every README work in a fresh venv, and the wheels install together from a folder.

One venv for all (about 1.5 minutes, marked slow): torch first, then the wheels that
``scripts/build_wheels.py`` builds, installed with ``pip install --find-links dist 'shardflow[all]'``;
then, each from a venv without any shardflow package, every ``pip install`` line of the READMEs' code
blocks, run from the repository root as written. Two liberties, both about how and not what pip installs:
the README's torch line (PyTorch's CPU index, which these machines cannot reach) is replaced by
``pip install torch==2.13.0``, which takes the CPU wheel that lies on their disk; and the lines run with
``--no-build-isolation`` (hatchling installed in the venv once) instead of a build venv per package.
Third-party packages come from the index pip is configured with.
"""

from __future__ import annotations

import glob
import re
import shlex
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[2]
READMES = [REPO / "README.md", *sorted(REPO.glob("packages/*/README.md"))]
INSTALL = re.compile(r"^(python3 -m )?pip install ")
PACKAGES = sorted(p.parent for p in REPO.glob("packages/*/pyproject.toml"))
SMOKE = """
import importlib, sys, tempfile
for name in sys.argv[1:]:
    importlib.import_module(name)
if "shardflow.format" in sys.argv[1:]:
    import numpy as np
    from shardflow.format import LocalDataset, MDSWriter
    with tempfile.TemporaryDirectory() as out:
        with MDSWriter(out=out, columns={"id": "int", "x": "ndarray:float32:4"}, compression="zstd") as w:
            for i in range(50):
                w.write({"id": i, "x": np.full(4, i, np.float32)})
        assert LocalDataset(out)[42]["id"] == 42
print("ok")
"""


def install_lines() -> list[tuple[str, list[str]]]:
    """``(where, pip install arguments)`` for every install line in a fenced code block of a README."""
    found = []
    for readme in READMES:
        fenced = False
        for number, line in enumerate(readme.read_text().splitlines(), 1):
            if line.startswith("```"):
                fenced = not fenced
                continue
            if fenced and INSTALL.match(line) and "hatch" not in line:
                words = shlex.split(INSTALL.sub("", line), comments=True)
                found.append((f"{readme.relative_to(REPO)}:{number}", words))
    return found


def expand(arguments: list[str]) -> list[str]:
    """The arguments as the shell gives them to pip from the repository root (``./packages/*`` expanded)."""
    expanded = []
    for argument in arguments:
        expanded += sorted(glob.glob(argument, root_dir=REPO)) if "*" in argument else [argument]
    return expanded


def modules(arguments: list[str]) -> list[str]:
    """The modules that installing ``arguments`` must make importable (``./packages/x`` -> shardflow.x)."""
    names = []
    for argument in expand(arguments):
        path = argument.split("[")[0].rstrip("/")
        if path == ".":
            names.append("shardflow._cli")
        elif path.startswith(("./packages/", "packages/")):
            names.append(f"shardflow.{Path(path).name}")
    return names


def test_readmes_name_no_published_package() -> None:
    published = re.compile(r"pip install (-q )?'?shardflow")
    for readme in READMES:
        for number, line in enumerate(readme.read_text().splitlines(), 1):
            assert not published.search(line), (
                f"{readme.relative_to(REPO)}:{number}: nothing is on PyPI; install from the clone: {line!r}"
            )


def test_every_readme_install_line_names_existing_packages_and_extras() -> None:
    lines = install_lines()
    documented = {where.split(":")[0] for where, _ in lines}
    assert documented >= {"README.md", *(f"packages/{p.name}/README.md" for p in PACKAGES)}, documented
    for where, arguments in lines:
        for argument in expand(arguments):
            path, _, extras = argument.partition("[")
            if not (path == "." or path.startswith("./packages/")):
                continue  # a requirement for the index (torch) or an option
            project = tomllib.loads((REPO / path / "pyproject.toml").read_text())["project"]
            for extra in filter(None, extras.rstrip("]").split(",")):
                assert extra in project.get("optional-dependencies", {}), f"{where}: {path} has no [{extra}]"


def _pip(python: Path, *arguments: str) -> None:
    result = subprocess.run([str(python), "-m", "pip", *arguments], capture_output=True, text=True, cwd=REPO)
    output = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0, f"pip {shlex.join(arguments)} failed:\n{output}"


def _smoke(python: Path, names: list[str]) -> None:
    """``names`` import in the venv; with shardflow.format, a small dataset is written and read back."""
    result = subprocess.run([str(python), "-c", SMOKE, *names], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", f"{names}: {result.stderr[-3000:]}"


def _uninstall_shardflow(python: Path) -> None:
    """Uninstall every shardflow distribution (pip skips the ones not installed)."""
    _pip(python, "uninstall", "-q", "-y", "shardflow", *(f"shardflow-{p.name}" for p in PACKAGES))


@pytest.mark.slow
def test_wheels_and_every_readme_line_install_in_a_fresh_venv(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from build_wheels import build_wheels

    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    _pip(python, "install", "-q", "torch==2.13.0", "hatchling")

    wheels = build_wheels(tmp_path / "dist")
    assert len(wheels) == len(PACKAGES) + 1, wheels
    _pip(python, "install", "-q", "--find-links", str(tmp_path / "dist"), "shardflow[all]")
    _pip(python, "check")
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = [r.split("==")[0].removeprefix("shardflow-") for r in meta if r.startswith("shardflow-")]
    _smoke(python, ["shardflow._cli", *(f"shardflow.{name}" for name in pinned)])  # every one: test_layout
    cli = subprocess.run([str(python.parent / "shardflow"), "--help"], capture_output=True, text=True)
    assert cli.returncode == 0 and "inspect" in cli.stdout, cli.stderr

    done: list[list[str]] = []
    for _, arguments in install_lines():
        if "--index-url" in arguments or "--find-links" in arguments or arguments in done:
            continue  # PyTorch's CPU index (torch==2.13.0 stands in), the wheels (above), a line seen before
        done.append(arguments)
        _uninstall_shardflow(python)
        _pip(python, "install", "-q", "--no-build-isolation", *expand(arguments))
        _smoke(python, modules(arguments))
    _pip(python, "check")
