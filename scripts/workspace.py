"""The packages of the monorepo, read from ``packages/*/pyproject.toml`` (stdlib only).

Shared by ``dev_install.py``, ``typecheck.py`` and the packaging tests, so that a new folder under
``packages/`` is picked up everywhere without a hand edit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["REPO", "Package", "find_packages", "requirement_name"]

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Package:
    """One installable package: ``packages/<name>`` holding ``src/shardflow/<name>``."""

    name: str
    path: Path
    dist: str
    dependencies: tuple[str, ...]
    extras: dict[str, tuple[str, ...]]

    @property
    def module(self) -> str:
        """Its import name, ``shardflow.<name>``."""
        return f"shardflow.{self.name}"

    @property
    def install_extra(self) -> str | None:
        """The extra the dev environment installs: ``all`` when the package declares it."""
        return "all" if "all" in self.extras else None

    def installed_requirements(self) -> tuple[str, ...]:
        """Its requirements in the dev environment: the dependencies and those of ``install_extra``."""
        return self.requirements(self.install_extra)

    def requirements(self, extra: str | None) -> tuple[str, ...]:
        """Its dependencies and those of ``extra`` (none when ``None``); an unknown extra is an error."""
        if extra is not None and extra not in self.extras:
            raise ValueError(
                f"{self.path}/pyproject.toml declares no extra {extra!r}; it has {sorted(self.extras)}"
            )
        return self.dependencies + (self.extras[extra] if extra else ())


def requirement_name(requirement: str) -> str:
    """The normalised project name of a requirement string (``"Torch>=2; ..."`` -> ``"torch"``)."""
    found = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not found:
        raise ValueError(f"cannot read a project name from the requirement {requirement!r}")
    return re.sub(r"[-_.]+", "-", found.group(1)).lower()


def find_packages(repo: Path = REPO) -> list[Package]:
    """Every ``packages/<name>`` with a ``pyproject.toml``, sorted by name."""
    found = []
    for pyproject in sorted((repo / "packages").glob("*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        extras = {key: tuple(value) for key, value in project.get("optional-dependencies", {}).items()}
        found.append(
            Package(
                name=pyproject.parent.name,
                path=pyproject.parent,
                dist=project["name"],
                dependencies=tuple(project.get("dependencies", [])),
                extras=extras,
            )
        )
    return found
