"""Errors the command line reports on one line with exit status 2, and the one error of
bad input that every service answers with INVALID_ARGUMENT."""

from __future__ import annotations

__all__ = ["CommandFailed", "InvalidInput", "NotFound", "ServiceUnreachable", "UsageError"]


class InvalidInput(ValueError):
    """A request or spec failed validation; the message starts with the field's path.

    Services answer it, and only it, with INVALID_ARGUMENT, which callers do not retry:
    any other exception, a bare ``ValueError`` from deep inside a training included, is
    an INTERNAL error, which they retry like any failure of a worker.
    """


class ServiceUnreachable(Exception):
    """A service could not be reached (after retries): the command exits with status 3."""


class NotFound(LookupError):
    """What the command names does not exist (a search, a trial's weights): status 4."""


class UsageError(Exception):
    """Bad input from the user, or a local service that could not run."""


class CommandFailed(Exception):
    """The command could not do its work (a local service that did not start): the
    command line says why on one line, with exit status 1."""
