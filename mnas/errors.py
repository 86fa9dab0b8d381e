"""Errors the command line reports on one line with exit status 2."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """Bad input from the user, or a local service that could not run."""
