"""A server interceptor that records RPCs under the grpc-ecosystem metric names.

``grpc_server_started_total``, ``grpc_server_handled_total`` (by code) and
``grpc_server_handling_seconds`` are the names of go-grpc-prometheus, so stock dashboards
work; ``mnas_grpc_server_in_flight_calls`` counts calls being handled.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["RpcMetrics", "RpcMetricsInterceptor"]

_LABELS = ("grpc_type", "grpc_service", "grpc_method")
_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800)


class RpcMetrics:
    """The RPC metric family, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter(
            "grpc_server_started_total",
            "RPCs started on the server.",
            _LABELS,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, by status code.",
            (*_LABELS, "grpc_code"),
            registry=registry,
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time to handle an RPC, until its last message.",
            _LABELS,
            buckets=_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "mnas_grpc_server_in_flight_calls",
            "RPCs being handled now.",
            ("grpc_service",),
            registry=registry,
        )


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


def _code(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code()  # type: ignore[attr-defined]
    if code is None:
        return "UNKNOWN" if failed else "OK"
    return str(code.name)


class RpcMetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Times unary and server-streaming RPCs and counts them by status code."""

    def __init__(self, metrics: RpcMetrics) -> None:
        self._m = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(details)
        if handler is None:
            return handler
        service, method = _split(details.method)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, service, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, service, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _begin(self, kind: str, service: str, method: str) -> float:
        self._m.started.labels(kind, service, method).inc()
        self._m.in_flight.labels(service).inc()
        return time.perf_counter()

    def _end(
        self,
        kind: str,
        service: str,
        method: str,
        start: float,
        context: grpc.ServicerContext,
        failed: bool,
    ) -> None:
        self._m.in_flight.labels(service).dec()
        self._m.seconds.labels(kind, service, method).observe(time.perf_counter() - start)
        self._m.handled.labels(kind, service, method, _code(context, failed)).inc()

    def _unary(self, behavior: Any, service: str, method: str) -> Any:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            start = self._begin("unary", service, method)
            failed = True
            try:
                response = behavior(request, context)
                failed = False
                return response
            finally:
                self._end("unary", service, method, start, context, failed)

        return wrapped

    def _stream(self, behavior: Any, service: str, method: str) -> Any:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            start = self._begin("server_stream", service, method)
            failed = True
            try:
                yield from behavior(request, context)
                failed = False
            finally:
                self._end("server_stream", service, method, start, context, failed)

        return wrapped
