"""Optional libraries: import one on first use, or say which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from shardflow.format.errors import MissingDependencyError

__all__ = ["require"]


def require(module: str, extra: str | None, user: str, package: str | None = None) -> ModuleType:
    """Import ``module`` (after the first time, a ``sys.modules`` lookup) for ``user``.

    Args:
        module: The module to import, e.g. ``'brotli'`` or ``'PIL.Image'``.
        extra: The shardflow-format extra that installs it, or None to name the package alone.
        user: What needs it, for the message, e.g. ``"compression 'br:4'"``.
        package: The name it is installed under, when not ``module`` (``'Pillow'``).

    Raises:
        MissingDependencyError: The import failed; the message names the package and how to install it.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = package or module
        install = f"pip install 'shardflow-format[{extra}]'" if extra else f"pip install {package}"
        raise MissingDependencyError(
            f"{user} needs the {package} package, which is missing: {install}"
        ) from exc
