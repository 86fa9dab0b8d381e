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

import grpc

from mnas.v1 import controller_pb2, latency_pb2, reward_pb2, trainer_pb2

__all__ = ["channel", "unary_methods"]


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


def channel(
    target: str, *, max_attempts: int = 5, initial_backoff: float = 0.2, max_backoff: float = 5.0
) -> grpc.Channel:
    """An insecure channel to ``target`` that retries UNAVAILABLE up to ``max_attempts``."""
    options = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _service_config(max_attempts, initial_backoff, max_backoff)),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ]
    return grpc.insecure_channel(target, options=options)
