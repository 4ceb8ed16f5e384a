"""torchvision beside the CPU torch, for the benchmarks and the tests that compare with it.

The only torchvision wheel these machines have is a CUDA build: with the CPU torch its compiled ops do not
load and ``import torchvision`` fails registering them (``../shared/reference/setup.sh`` patches the same in
the reference's venv). The transforms, ``ImageFolder`` and the models used here need none of them, so in
that case only the two registration modules are left out.
"""

from __future__ import annotations

import sys
import types

__all__ = ["import_torchvision"]


def import_torchvision() -> types.ModuleType:
    """torchvision; when its compiled ops cannot load, without them (ImportError when not installed)."""
    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        for name in [name for name in sys.modules if name.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
            sys.modules[name] = types.ModuleType(name)
        import torchvision
    return torchvision
