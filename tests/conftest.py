"""Shared test fixtures: where the repository, its reference data and the reference implementation live.

The datasets that mosaicml-streaming 0.13.0 wrote (and their ``values.py``) are part of the repository,
``tests/fixtures/reference``; only the tests that run the reference implementation itself need
``../shared/reference/setup.sh`` beside the repository. Without it they are skipped, counted at the end of
the run with the reason; with ``SHARDFLOW_REQUIRE_REFERENCE=1`` (``.ci/run`` sets it) they fail instead.
Fetches that take a while (the reference venv, Azurite through npm) are announced on the terminal first.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures" / "reference"
REFERENCE_SETUP = SHARED_DIR / "reference" / "setup.sh"
NO_REFERENCE = (
    f"needs the reference implementation (mosaicml-streaming 0.13.0), built by {REFERENCE_SETUP}, "
    "which is absent: put the shared/ folder beside the repository to run it"
)

log = logging.getLogger("shardflow.tests")

# Session fixtures that may fetch something slow, and what to say on the terminal before they start.
ANNOUNCE = {
    "reference_python": (
        f"reference implementation: running {REFERENCE_SETUP} (the first time it builds a venv with "
        "mosaicml-streaming 0.13.0 and torch with pip, a few minutes; later runs reuse it)"
    ),
    "azure_server": (
        "Azurite (the Azure Blob emulator) starts now; the first time it is installed with npm into "
        "$SHARDFLOW_AZURITE_DIR (default ~/.cache/shardflow-azurite), about a minute"
    ),
}


def announce(config: pytest.Config, message: str) -> None:
    """Show ``message`` on the terminal now, past pytest's output capture, and log it."""
    log.info("%s", message)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(message, file=sys.stderr, flush=True)
        return
    with capture.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.write_line(f"[shardflow tests] {message}", yellow=True)


class _Announcer:
    """A plugin announcing the slow fetches of ``ANNOUNCE`` before their fixture runs, once a session each.

    Registered globally in :func:`pytest_configure`: a session fixture is set up through the hooks of the
    rootdir's conftests, which do not include this one (it is in tests/).
    """

    def __init__(self) -> None:
        self.announced: set[str] = set()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest
    ) -> Iterator[None]:
        message = ANNOUNCE.get(fixturedef.argname)
        if message is not None and fixturedef.argname not in self.announced:
            self.announced.add(fixturedef.argname)
            announce(request.config, message)
        yield


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_Announcer(), "shardflow-announce")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many tests were skipped because the reference implementation is absent."""
    skipped = [
        report for report in terminalreporter.stats.get("skipped", [])
        if isinstance(report.longrepr, tuple) and NO_REFERENCE in str(report.longrepr[2])
    ]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} test(s) skipped: each {NO_REFERENCE}; every other test ran.", yellow=True
        )


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``tests/fixtures/reference``: the datasets mosaicml-streaming 0.13.0 wrote, and ``values.py``.

    Byte-identical copies of ``../shared/fixtures`` (tests/fixtures/README.md); read-only by convention:
    tests copy a dataset before changing it.
    """
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def reference_python() -> Path:
    """A python with mosaicml-streaming 0.13.0: $SHARDFLOW_REFERENCE_PYTHON, else built by
    ``../shared/reference/setup.sh`` on first use and reused. Skipped when that script is absent (failed
    with ``SHARDFLOW_REQUIRE_REFERENCE=1``); a failing set-up fails the test."""
    explicit = os.environ.get("SHARDFLOW_REFERENCE_PYTHON")
    if explicit:
        return Path(explicit)
    if not REFERENCE_SETUP.is_file():
        if os.environ.get("SHARDFLOW_REQUIRE_REFERENCE") == "1":
            pytest.fail(f"SHARDFLOW_REQUIRE_REFERENCE=1, but this test {NO_REFERENCE}")
        pytest.skip(NO_REFERENCE)
    result = subprocess.run(["bash", str(REFERENCE_SETUP)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"{REFERENCE_SETUP} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0); os.pwrite(fd, str(os.getpid()).encode(), 0)
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def held_lock() -> Iterator[Callable[[Path], int]]:
    """``hold(path)``: another process takes an exclusive ``flock`` on ``path`` (writing its pid into it, as
    shardflow's lock holders do) and keeps it until the test ends; returns that process's pid."""
    holders: list[subprocess.Popen[str]] = []

    def hold(path: Path) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        holders.append(holder)
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        return holder.pid

    yield hold
    for holder in holders:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
