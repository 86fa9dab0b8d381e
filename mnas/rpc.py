"""Client channels with bounded retries on UNAVAILABLE, and deadlines.

Retries use gRPC's own retry policy (service config), so they back off exponentially
with jitter and stop after ``max_attempts``. The policy covers the unary methods of our
services only: a server-streaming call retried before its first response (grpcio 1.85)
was seen to hang past its deadline when the server died, so streams fail fast with
UNAVAILABLE and their callers retry (the controller on another endpoint). Every call our
code makes also passes a ``timeout``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import grpc

from mnas.tls import ClientTLS
from mnas.v1 import controller_pb2, latency_pb2, reward_pb2, trainer_pb2

__all__ = ["KEEPALIVE", "KEEPALIVE_SERVER", "BearerToken", "channel", "unary_methods"]

# While a call is in flight the client pings every 10 s and gives up on the connection
# when a ping goes unanswered for 5 s: a peer whose network hangs (no reset, no data)
# fails the call with UNAVAILABLE in about 15 s instead of at the call's deadline (a
# measurement's 15 minutes, a training's hour), and the caller retries elsewhere.
KEEPALIVE: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.ping_timeout_ms", 5_000),  # grpcio 1.85 waits this long for the ack
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
)
# What a server must allow for those pings: by default it answers a ping more often than
# every 5 minutes on a call that sends no data (a long measurement) with GOAWAY.
KEEPALIVE_SERVER: tuple[tuple[str, int], ...] = (
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
)


@functools.cache
def unary_methods() -> tuple[tuple[str, str], ...]:
    """(service, method) of every unary RPC of the mnas.v1 services."""
    found = []
    for module in (controller_pb2, trainer_pb2, latency_pb2, reward_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if not method.client_streaming and not method.server_streaming:
                    found.append((service.full_name, method.name))
    return tuple(found)


def _service_config(max_attempts: int, initial_backoff: float, max_backoff: float) -> str:
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": s, "method": m} for s, m in unary_methods()],
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": f"{initial_backoff}s",
                        "maxBackoff": f"{max_backoff}s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Sends ``authorization: Bearer TOKEN`` with every call. As metadata, not call
    credentials: gRPC sends those over TLS only, and a controller on loopback may take
    tokens in plaintext (off loopback, use TLS so the token is not readable on the wire)."""

    def __init__(self, token: str) -> None:
        if not token or any(c.isspace() for c in token):
            raise ValueError("token: must be non-empty and hold no whitespace")
        self._metadata = ("authorization", f"Bearer {token}")

    def __repr__(self) -> str:  # never shows the token
        return "BearerToken(***)"

    def _with_token(self, details: Any) -> Any:
        metadata = (*(details.metadata or ()), self._metadata)
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[[Any, Any], Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._with_token(details), request)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(
        self,
        method: str,
        timeout: float | None,
        metadata: tuple[tuple[str, str | bytes], ...],
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
    ) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


def channel(
    target: str,
    *,
    tls: ClientTLS | None = None,
    token: str | None = None,
    max_attempts: int = 5,
    initial_backoff: float = 0.2,
    max_backoff: float = 5.0,
) -> grpc.Channel:
    """A channel to ``target`` that retries UNAVAILABLE up to ``max_attempts``: over TLS
    when ``tls`` is given (plaintext otherwise), sending ``token`` as a bearer token with
    every call when it is given."""
    options: list[tuple[str, Any]] = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _service_config(max_attempts, initial_backoff, max_backoff)),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        *KEEPALIVE,
    ]
    if tls is None:
        made = grpc.insecure_channel(target, options=options)
    else:
        made = grpc.secure_channel(target, tls.credentials(), options=options + tls.options())
    if token is not None:
        return grpc.intercept_channel(made, BearerToken(token))
    return made
