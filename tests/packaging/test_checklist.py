"""Every folder under packages/ is wired into what still takes a hand edit (ARCHITECTURE.md, "Adding a
package").

The dev environment and the lint find packages by themselves (scripts/dev_install.py, scripts/typecheck.py);
these tests check that they do, and fail with the step to take when a new package misses one of the rest.
The meta's exact pins are checked by test_layout.py's ``test_meta_depends_on_every_package``.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
ARCHITECTURE = REPO / "ARCHITECTURE.md"
FACADE = REPO / "src" / "shardflow" / "__init__.py"

# Packages whose public names are not re-exported by ``shardflow`` itself, and why.
FACADE_EXEMPT = {
    "storage": "used through the writers' uploads and the dataset; users import shardflow.storage",
    "shuffle": "the dataset's sample-order engine; imported as shardflow.shuffle by those who need it",
    "convert": "mostly used as CLIs (python -m shardflow.convert.<name>); users import shardflow.convert",
    "plan": "used as the `shardflow plan` command; users import shardflow.plan",
}


def _script(name: str) -> ModuleType:
    """A module of scripts/ (they import each other by plain name, as when run as scripts)."""
    scripts = str(REPO / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    return importlib.import_module(name)


PACKAGES = _script("workspace").find_packages(REPO)
NAMES = [package.name for package in PACKAGES]


def _lazy_table() -> dict[str, str]:
    """The facade's ``_LAZY`` table, read from the source (importing it would prove nothing more)."""
    for node in ast.parse(FACADE.read_text()).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "_LAZY":
            return ast.literal_eval(node.value)  # type: ignore[arg-type]
    raise AssertionError(f"{FACADE} has no _LAZY table")


def _type_checking_imports() -> dict[str, str]:
    """Names imported under ``if TYPE_CHECKING:`` in the facade, with their module."""
    imported: dict[str, str] = {}
    for node in ast.parse(FACADE.read_text()).body:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom):
                    imported.update({alias.name: str(statement.module) for alias in statement.names})
    return imported


def test_the_known_packages_are_found() -> None:
    assert {"format", "storage", "shuffle"} <= set(NAMES), NAMES
    for package in PACKAGES:
        expected = f"shardflow-{package.name}"
        assert package.dist == expected, f"{package.path}/pyproject.toml: name it {expected}"


@pytest.mark.parametrize("package", PACKAGES, ids=NAMES)
def test_dev_install_takes_every_package_in_one_command(package) -> None:  # noqa: ANN001
    *_, last = _script("dev_install").pip_commands(PACKAGES)
    extra = "[all]" if "all" in package.extras else ""
    assert f"{package.path}{extra}" in last and last[last.index(f"{package.path}{extra}") - 1] == "-e"


def test_dev_install_puts_the_torch_pin_first_only_when_needed() -> None:
    dev_install = _script("dev_install")
    workspace = _script("workspace")
    plain = workspace.Package("plain", REPO / "packages" / "plain", "shardflow-plain", ("numpy",), {})
    torchy = workspace.Package(
        "torchy", REPO / "packages" / "torchy", "shardflow-torchy", ("numpy",), {"all": ("Torch>=2.1",)}
    )
    (only,) = dev_install.pip_commands([plain])
    assert "-e" in only and not any("torch" in arg for arg in only)
    first, second = dev_install.pip_commands([plain, torchy])
    assert first[-1] == dev_install.TORCH and "-e" not in first
    assert second.count("-e") == 2 and f"{torchy.path}[all]" in second


def test_lint_type_checks_every_package() -> None:
    command = _script("typecheck").mypy_command([])
    for package in PACKAGES:
        assert f"shardflow.{package.name}" in command, f"scripts/typecheck.py skips {package.name}"


@pytest.mark.parametrize("name", NAMES)
def test_architecture_describes_every_package(name: str) -> None:
    assert f"`packages/{name}`" in ARCHITECTURE.read_text(), (
        f"add packages/{name} to the package table of ARCHITECTURE.md"
    )


@pytest.mark.parametrize("name", NAMES)
def test_facade_exposes_every_package_or_says_why_not(name: str) -> None:
    exposed = set(_lazy_table().values())
    assert f"shardflow.{name}" in exposed or name in FACADE_EXEMPT, (
        f"shardflow.{name} has no name in the facade: add its public names to _LAZY (and to the "
        f"TYPE_CHECKING imports) in src/shardflow/__init__.py, or add it to FACADE_EXEMPT with the reason"
    )


def test_facade_names_existing_packages_and_matches_its_type_checking_imports() -> None:
    lazy = _lazy_table()
    for name, module in lazy.items():
        assert module.removeprefix("shardflow.") in NAMES, f"_LAZY[{name!r}] = {module!r}: no such package"
    assert _type_checking_imports() == lazy, "the facade's TYPE_CHECKING imports must list exactly _LAZY"


@pytest.mark.parametrize("package", PACKAGES, ids=NAMES)
def test_every_package_has_a_readme_types_marker_and_the_license(package) -> None:  # noqa: ANN001
    assert (package.path / "README.md").is_file(), f"{package.path} needs a README.md"
    assert (package.path / "src" / "shardflow" / package.name / "py.typed").is_file(), "add py.typed"
    project = _script("workspace").tomllib.loads((package.path / "pyproject.toml").read_text())["project"]
    assert project.get("license") == "Apache-2.0", f"{package.path}/pyproject.toml: license = 'Apache-2.0'"


def test_license_is_the_apache_license() -> None:
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_dev_install_extras_choose_the_lean_demo_environment() -> None:
    dev_install = _script("dev_install")
    extras = dev_install.parse_extras("format=images+xxhash,storage=s3", PACKAGES)
    assert extras == {"format": ("images", "xxhash"), "storage": ("s3",)}
    *_, last = dev_install.pip_commands(PACKAGES, extras)
    paths = {package.name: package.path for package in PACKAGES}
    assert f"{paths['format']}[images,xxhash]" in last and f"{paths['storage']}[s3]" in last
    assert str(paths["dataset"]) in last and not any(arg.endswith("[all]") for arg in last)
    for wrong in ("format=nope", "nope=all", "format"):
        with pytest.raises(SystemExit, match="--extras"):
            dev_install.parse_extras(wrong, PACKAGES)
