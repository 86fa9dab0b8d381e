"""Domain errors to gRPC status codes: the one table every servicer answers failures with.

The rows all services share (:class:`~mnas.errors.InvalidInput` is INVALID_ARGUMENT, which
callers do not retry) come after a service's own rows; the first row whose exception type
matches wins, and anything else is INTERNAL, logged with its traceback and reported as
``internal error: Type: message`` (which callers retry like any failure of a worker).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import grpc

from mnas.errors import InvalidInput

__all__ = ["MAX_DETAILS", "SHARED_ROWS", "StatusRow", "StatusTable", "internal_details"]

# The most characters of an unexpected error's message a status carries.
MAX_DETAILS = 300

StatusRow = tuple[type[Exception], grpc.StatusCode]

SHARED_ROWS: tuple[StatusRow, ...] = ((InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),)


def internal_details(err: BaseException) -> str:
    """The details of an INTERNAL status: the exception's type and message, cut short."""
    return f"internal error: {type(err).__name__}: {err}"[:MAX_DETAILS]


@dataclass(frozen=True)
class StatusTable:
    """A service's exception types and the status codes they become, then the shared
    rows; ``describe``: the details a matched error is reported with (its message by
    default)."""

    rows: tuple[StatusRow, ...]
    describe: Callable[[Exception], str] = str

    @classmethod
    def of(cls, *rows: StatusRow, describe: Callable[[Exception], str] = str) -> StatusTable:
        """The table of a service's own ``rows`` followed by :data:`SHARED_ROWS`."""
        return cls(rows=(*rows, *SHARED_ROWS), describe=describe)

    def status(self, err: Exception) -> tuple[grpc.StatusCode, str]:
        """The status code and details ``err`` is reported with."""
        for kind, code in self.rows:
            if isinstance(err, kind):
                return code, self.describe(err)
        return grpc.StatusCode.INTERNAL, internal_details(err)

    def abort(
        self,
        context: grpc.ServicerContext,
        err: Exception,
        *,
        logger: logging.Logger,
        call: str,
    ) -> NoReturn:
        """End the RPC with ``err``'s status; an unexpected error is logged to ``logger``
        as ``<call> failed`` first."""
        code, details = self.status(err)
        if code is grpc.StatusCode.INTERNAL:
            logger.error("%s failed", call, exc_info=err)
        context.abort(code, details)
