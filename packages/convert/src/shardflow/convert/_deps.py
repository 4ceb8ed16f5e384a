"""Optional readers: import one on first use, or say which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from shardflow.convert.errors import MissingDependencyError

__all__ = ["require"]


def require(module: str, extra: str, user: str, package: str | None = None) -> ModuleType:
    """Import ``module`` for ``user`` (e.g. ``'imagefolder'``), or raise naming the extra to install.

    Raises:
        MissingDependencyError: The import failed; the message names the extra to install.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{user} needs the {package or module} package, which is missing: "
            f"pip install 'shardflow-convert[{extra}]'"
        ) from exc
