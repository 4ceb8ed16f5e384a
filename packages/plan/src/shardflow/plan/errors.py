"""The errors of shardflow.plan: one base, leaves that also inherit the matching builtin."""

from __future__ import annotations

__all__ = ["PlanError", "PlanInputError", "MissingDependencyError"]


class PlanError(Exception):
    """Base of every error raised by shardflow.plan."""


class PlanInputError(PlanError, ValueError):
    """An argument, index or synthetic description that cannot be planned; the message names it."""


class MissingDependencyError(PlanError, ImportError):
    """An optional dependency (matplotlib for reports) that is not installed; the message names the extra."""
