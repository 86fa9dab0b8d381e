"""The Controller servicer: proto in, :class:`core.Controller`, proto out."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc
from prometheus_client import CollectorRegistry

from mnas.tls import ServerTLS
from mnas.v1 import common_pb2, controller_pb2, controller_pb2_grpc
from services.common.errors import StatusTable
from services.common.server import RunningServer, build_server
from services.controller.auth import UNAUTHENTICATED_MESSAGE, TokenAuthInterceptor
from services.controller.core import (
    AlreadyExists,
    Controller,
    NotFound,
    NoWeights,
    ShuttingDown,
    WorkersUnavailable,
)
from services.controller.users import User, Users

__all__ = ["SERVICE_NAME", "ControllerServicer", "make_server"]

SERVICE_NAME = "mnas.v1.Controller"
_logger = logging.getLogger(__name__)
WEIGHTS_CHUNK_BYTES = 1 << 20


def _describe(err: Exception) -> str:
    """The details a known error is reported with (a missing search's id, quoted)."""
    if isinstance(err, NotFound):
        return f"no search {err.args[0]!r}"
    if isinstance(err, AlreadyExists):
        return f"a search with id {err.args[0]!r} exists already"
    return str(err)


_STATUS_TABLE = StatusTable.of(
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (NoWeights, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (WorkersUnavailable, grpc.StatusCode.UNAVAILABLE),
    (ShuttingDown, grpc.StatusCode.UNAVAILABLE),
    describe=_describe,
)

T = TypeVar("T")


def _call(context: grpc.ServicerContext, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except Exception as err:
        _STATUS_TABLE.abort(context, err, logger=_logger, call="controller call")


class ControllerServicer(controller_pb2_grpc.ControllerServicer):
    """``users``: the token file's users, when calls must carry a token (the interceptor
    refuses those without one; here a call's token tells whose searches it may touch).

    A watch holds one of the server's threads for as long as it lasts: at most
    ``max_watches`` run at once, and one more is refused with RESOURCE_EXHAUSTED, so the
    threads left always answer the other calls (a flood of watchers cannot starve
    GetSearch)."""

    def __init__(
        self, controller: Controller, users: Users | None = None, *, max_watches: int = 224
    ) -> None:
        self._c = controller
        self._users = users
        self._max_watches = max_watches
        self._watch_slots = threading.BoundedSemaphore(max_watches)

    def _user(self, context: grpc.ServicerContext) -> User | None:
        if self._users is None:
            return None
        user = self._users.from_metadata(context.invocation_metadata())
        if user is None:  # the interceptor lets no such call through
            context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        return user

    def SubmitSearch(
        self, request: controller_pb2.SubmitSearchRequest, context: grpc.ServicerContext
    ) -> controller_pb2.SubmitSearchResponse:
        user = self._user(context)
        search = _call(context, lambda: self._c.submit(request.spec, request.search_id, user=user))
        return controller_pb2.SubmitSearchResponse(search=search)

    def GetSearch(
        self, request: controller_pb2.GetSearchRequest, context: grpc.ServicerContext
    ) -> controller_pb2.GetSearchResponse:
        user = self._user(context)
        return controller_pb2.GetSearchResponse(
            search=_call(context, lambda: self._c.get(request.search_id, user=user))
        )

    def ListSearches(
        self, request: controller_pb2.ListSearchesRequest, context: grpc.ServicerContext
    ) -> controller_pb2.ListSearchesResponse:
        user = self._user(context)
        return controller_pb2.ListSearchesResponse(searches=self._c.list_searches(user=user))

    def WatchSearch(
        self, request: controller_pb2.WatchSearchRequest, context: grpc.ServicerContext
    ) -> Iterator[controller_pb2.WatchSearchResponse]:
        if not self._watch_slots.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many watchers: {self._max_watches} watches run already; poll "
                "GetSearch, or start the controller with more --max-workers",
            )
        released = threading.Lock()

        def release() -> None:  # once: on the call's end or the stream's, whichever first
            if released.acquire(blocking=False):
                self._watch_slots.release()

        active = threading.Event()
        active.set()
        context.add_callback(active.clear)
        context.add_callback(release)
        try:
            user = self._user(context)
            _call(context, lambda: self._c.get(request.search_id, user=user))
            yield from self._c.watch(request.search_id, active=active, user=user)
        finally:
            release()

    def ListTrials(
        self, request: controller_pb2.ListTrialsRequest, context: grpc.ServicerContext
    ) -> controller_pb2.ListTrialsResponse:
        user = self._user(context)
        trials, token = _call(
            context,
            lambda: self._c.trials(
                request.search_id,
                page_size=request.page_size,
                page_token=request.page_token,
                user=user,
            ),
        )
        return controller_pb2.ListTrialsResponse(trials=trials, next_page_token=token)

    def CancelSearch(
        self, request: controller_pb2.CancelSearchRequest, context: grpc.ServicerContext
    ) -> controller_pb2.CancelSearchResponse:
        user = self._user(context)
        return controller_pb2.CancelSearchResponse(
            search=_call(context, lambda: self._c.cancel(request.search_id, user=user))
        )

    def GetWeights(
        self, request: controller_pb2.GetWeightsRequest, context: grpc.ServicerContext
    ) -> Iterator[common_pb2.WeightsChunk]:
        user = self._user(context)
        data = _call(context, lambda: self._c.weights(request.search_id, request.trial, user=user))
        for offset in range(0, len(data), WEIGHTS_CHUNK_BYTES):
            yield common_pb2.WeightsChunk(
                data=data[offset : offset + WEIGHTS_CHUNK_BYTES],
                offset=offset,
                total_bytes=len(data),
            )


def make_server(
    controller: Controller,
    *,
    registry: CollectorRegistry,
    port: int = 0,
    host: str = "127.0.0.1",
    tls: ServerTLS | None = None,
    health_port: int | None = None,
    users: Users | None = None,
    max_workers: int = 256,
) -> RunningServer:
    """Serve ``controller``; with ``users``, every Controller call needs one's token.

    ``max_workers``: the server's threads; watches may take all but 32 of them."""
    if max_workers < 64:
        raise ValueError(f"max_workers: must be >= 64, got {max_workers}")
    servicer = ControllerServicer(controller, users, max_watches=max_workers - 32)
    running = build_server(
        service_names=[SERVICE_NAME],
        add_servicers=lambda s: controller_pb2_grpc.add_ControllerServicer_to_server(servicer, s),
        registry=registry,
        port=port,
        host=host,
        tls=tls,
        health_port=health_port,
        interceptors=[] if users is None else [TokenAuthInterceptor(users, [SERVICE_NAME])],
        max_workers=max_workers,
    )
    # The searches' own work stops within what is left of the server's grace.
    running.on_stop.append(lambda: controller.shutdown(running.seconds_left()))
    return running
