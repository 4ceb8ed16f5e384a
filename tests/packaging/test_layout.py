"""The monorepo stays a PEP 420 namespace of separately installable packages with one version."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from shardflow import _version as meta_version

REPO = Path(__file__).resolve().parents[2]
PACKAGES = sorted(p for p in (REPO / "packages").iterdir() if (p / "pyproject.toml").is_file())

# Modules that a package must not load at import time (ARCHITECTURE.md, "Who may import whom").
HEAVY = {"torch", "numba", "boto3", "botocore", "google", "azure", "oci", "PIL"}
SIBLINGS = {"shardflow.format", "shardflow.storage", "shardflow.shuffle", "shardflow.dataset",
            "shardflow.convert", "shardflow.plan"}
# What each package may import eagerly, beyond itself: a new package needs a line here.
ALLOWED = {
    "format": set(),
    "storage": set(),
    "shuffle": {"numba"},
    "dataset": {"torch", "numba", "shardflow.format", "shardflow.storage", "shardflow.shuffle"},
    "convert": {"shardflow.format"},
    "plan": set(),  # format, storage, shuffle (numba) and matplotlib load when a plan runs
}


def _pyproject(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def test_no_init_file_in_any_namespace_portion() -> None:
    stray = [p for p in REPO.glob("packages/*/src/shardflow/__init__.py")]
    assert not stray, f"{stray} would hide every sibling package of the shardflow namespace: delete it"


def test_every_package_is_found_under_the_shardflow_namespace() -> None:
    import shardflow

    for package in PACKAGES:
        name = package.name
        assert (package / "src" / "shardflow" / name).is_dir(), f"{package} must hold src/shardflow/{name}"
        assert any(Path(p) == package / "src" / "shardflow" for p in shardflow.__path__), (
            f"{package} is not on shardflow.__path__ {list(shardflow.__path__)}: is it installed?"
        )


def test_versions_agree_and_siblings_are_pinned_exactly() -> None:
    version = meta_version.__version__
    version_re = re.compile(r'^__version__ = "([^"]+)"$', re.M)
    for package in PACKAGES:
        version_file = package / "src" / "shardflow" / package.name / "_version.py"
        found = version_re.search(version_file.read_text())
        assert found and found.group(1) == version, f"{version_file} disagrees with the meta's {version}"
    pyprojects = [REPO / "pyproject.toml", *(p / "pyproject.toml" for p in PACKAGES)]
    for path in pyprojects:
        project = _pyproject(path)["project"]
        requirements = list(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            requirements += extra
        for requirement in requirements:
            if requirement.startswith("shardflow"):
                pinned = re.fullmatch(r"shardflow-[a-z]+(\[[a-z0-9,-]+\])?==(.+)", requirement)
                assert pinned and pinned.group(2) == version, f"{path}: {requirement!r} must pin =={version}"


def test_meta_depends_on_every_package() -> None:
    dependencies = _pyproject(REPO / "pyproject.toml")["project"]["dependencies"]
    for package in PACKAGES:
        dist = _pyproject(package / "pyproject.toml")["project"]["name"]
        pin = f"{dist}==" + meta_version.__version__
        assert pin in dependencies, f"the meta must depend on {dist}: add {pin!r} to the root pyproject.toml"


def test_every_package_has_layering_rules() -> None:
    missing = sorted({p.name for p in PACKAGES} - set(ALLOWED))
    assert not missing, f"add {missing} to ALLOWED above: what each may load at import time (ARCHITECTURE.md)"


@pytest.mark.parametrize("package", [p.name for p in PACKAGES])
def test_import_loads_nothing_heavy(package: str) -> None:
    if package not in ALLOWED:
        pytest.fail(f"{package} has no line in ALLOWED: see test_every_package_has_layering_rules")
    forbidden = (HEAVY | SIBLINGS) - ALLOWED[package] - {f"shardflow.{package}"}
    code = (
        f"import sys, shardflow.{package}\n"
        "loaded = {m.split('.')[0] if not m.startswith('shardflow.') else '.'.join(m.split('.')[:2])"
        " for m in sys.modules}\n"
        f"print(sorted(loaded & set({sorted(forbidden)!r})))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", f"import shardflow.{package} loaded {result.stdout.strip()}"


def test_meta_facade_is_lazy() -> None:
    code = (
        "import sys, shardflow\n"
        "print(sorted(m for m in sys.modules if m.startswith('shardflow.') and m != 'shardflow._version'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_meta_facade_resolves_every_public_name() -> None:
    import shardflow

    for name in shardflow.__all__:
        assert getattr(shardflow, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        shardflow.nonexistent  # noqa: B018


def test_meta_wheel_ships_every_module_and_its_command() -> None:
    project = _pyproject(REPO / "pyproject.toml")
    shipped = set(project["tool"]["hatch"]["build"]["targets"]["wheel"]["only-include"])
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "src" / "shardflow").glob("*.py")}
    assert modules <= shipped, f"add {sorted(modules - shipped)} to the root wheel's only-include"
    module, _, function = project["project"]["scripts"]["shardflow"].partition(":")
    assert f"src/{module.replace('.', '/')}.py" in shipped and function == "main"
