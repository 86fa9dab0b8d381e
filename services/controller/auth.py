"""A server interceptor that refuses calls without a known bearer token.

It guards the services it is given (the controller's); health and reflection stay open,
so probes and ``grpcurl list`` work without a token. Which user a call is, and what that
user may see, is the servicer's business (:mod:`services.controller.users`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import grpc

from services.controller.users import Users

__all__ = ["UNAUTHENTICATED_MESSAGE", "TokenAuthInterceptor"]

UNAUTHENTICATED_MESSAGE = "a valid 'authorization: Bearer TOKEN' is required"


class TokenAuthInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, users: Users, services: Collection[str]) -> None:
        self._users = users
        self._services = frozenset(services)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(details)
        service = details.method.split("/")[1] if details.method.count("/") == 2 else ""
        if handler is None or service not in self._services:
            return handler
        if self._users.from_metadata(details.invocation_metadata) is not None:
            return handler
        return _refusing(handler)


def _deny(_request: Any, context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)


def _refusing(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of ``handler``'s kind that answers UNAUTHENTICATED."""
    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
    }
    make = kinds.get((handler.request_streaming, handler.response_streaming))
    if make is None:  # no client-streaming methods are guarded today
        raise NotImplementedError("client-streaming methods cannot be guarded")
    return make(
        _deny,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
