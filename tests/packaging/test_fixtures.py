"""The reference datasets in tests/fixtures/reference are the ones mosaicml-streaming wrote, byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REFERENCE = FIXTURES / "reference"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
OWN_FILES = {"MANIFEST.json", "README.md", "values.py"}  # beside the datasets, not in the manifest


def files(root: Path) -> set[str]:
    """Every file under ``root`` as a relative POSIX path (Python's caches left out)."""
    return {
        p.relative_to(root).as_posix() for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_every_manifest_file_is_there_with_its_size() -> None:
    manifest = json.loads((REFERENCE / "MANIFEST.json").read_text())
    assert files(REFERENCE) == set(manifest) | OWN_FILES
    wrong = {name: (REFERENCE / name).stat().st_size for name, size in manifest.items()
             if (REFERENCE / name).stat().st_size != size}
    assert not wrong, f"sizes differ from MANIFEST.json: {wrong}"


def test_every_file_matches_its_recorded_sha256() -> None:
    recorded = dict(
        reversed(line.split("  ", 1)) for line in (FIXTURES / "reference.sha256").read_text().splitlines()
    )
    assert set(recorded) == files(REFERENCE)
    changed = [name for name, digest in recorded.items()
               if hashlib.sha256((REFERENCE / name).read_bytes()).hexdigest() != digest]
    assert not changed, f"{changed} changed: the fixtures are data, restore them (tests/fixtures/README.md)"


def test_copies_are_byte_identical_to_the_shared_fixtures() -> None:
    if not SHARED.is_dir():
        if os.environ.get("SHARDFLOW_REQUIRE_REFERENCE") == "1":
            pytest.fail(f"SHARDFLOW_REQUIRE_REFERENCE=1 but {SHARED} is missing")
        pytest.skip(f"{SHARED} is absent: the copies were checked against reference.sha256 only")
    assert files(REFERENCE) == files(SHARED)
    differ = [name for name in sorted(files(SHARED))
              if (REFERENCE / name).read_bytes() != (SHARED / name).read_bytes()]
    assert not differ, f"{differ} differ from {SHARED}: refresh them (tests/fixtures/README.md)"
