"""The SDK's errors, apart from the client so that what raises them (the client, the model
helpers) needs no gRPC to do so. :mod:`mnas.client` maps status codes onto them and
re-exports them."""

from __future__ import annotations

from mnas.errors import NotFound, ServiceUnreachable

__all__ = [
    "ControllerUnavailable",
    "InvalidSpec",
    "MnasError",
    "SearchExists",
    "SearchNotFound",
    "Unauthenticated",
]


class MnasError(Exception):
    """A call to the controller failed."""


class InvalidSpec(MnasError, ValueError):
    """The controller refused the spec; the message names the field."""


class SearchNotFound(MnasError, NotFound, KeyError):
    """No search by that id, or it has no such trial or kept no weights for it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "search not found"


class SearchExists(MnasError):
    """A search with the id asked for exists already (a repeated submission)."""


class ControllerUnavailable(MnasError, ServiceUnreachable, ConnectionError):
    """The controller could not be reached (after retries)."""


class Unauthenticated(MnasError, PermissionError):
    """The controller checks tokens and this client's was missing or not known."""
