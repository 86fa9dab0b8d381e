"""Client channels with bounded retries on UNAVAILABLE, and deadlines.

Retries use gRPC's own retry policy (service config), so they back off exponentially
with jitter and stop after ``max_attempts``; streaming calls are retried only until their
first response arrives. Every call our code makes also passes a ``timeout``.
"""

from __future__ import annotations

import json

import grpc

__all__ = ["channel"]


def _service_config(max_attempts: int, initial_backoff: float, max_backoff: float) -> str:
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{}],
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
