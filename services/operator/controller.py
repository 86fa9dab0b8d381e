"""The controller over gRPC, as the reconciler's :class:`~reconcile.ControllerPort`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc

from mnas.rpc import channel
from mnas.v1 import common_pb2, controller_pb2, controller_pb2_grpc
from services.operator.reconcile import (
    AlreadyExists,
    ControllerUnavailable,
    Rejected,
    SearchGone,
)

__all__ = ["GrpcController"]

T = TypeVar("T")

# Status codes and the reconciler's errors they become; others propagate as RpcError.
_ERRORS: dict[grpc.StatusCode, type[Exception]] = {
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.INVALID_ARGUMENT: Rejected,
    grpc.StatusCode.NOT_FOUND: SearchGone,
    grpc.StatusCode.UNAVAILABLE: ControllerUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: ControllerUnavailable,
}


class GrpcController:
    """Calls to one controller, each with a deadline of ``timeout`` seconds."""

    def __init__(self, target: str, *, timeout: float = 30.0) -> None:
        self.target = target
        self.timeout = timeout
        self._channel = channel(target)
        self._stub = controller_pb2_grpc.ControllerStub(self._channel)

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except grpc.RpcError as err:
            kind = _ERRORS.get(err.code())
            if kind is None:
                raise
            if kind is ControllerUnavailable:
                raise kind(f"{self.target}: {err.details()}") from None
            raise kind(str(err.details())) from None  # starts with the field path

    def submit(self, spec: common_pb2.SearchSpec, search_id: str) -> common_pb2.Search:
        request = controller_pb2.SubmitSearchRequest(spec=spec, search_id=search_id)
        response = self._call(lambda: self._stub.SubmitSearch(request, timeout=self.timeout))
        return response.search

    def get(self, search_id: str) -> common_pb2.Search:
        request = controller_pb2.GetSearchRequest(search_id=search_id)
        return self._call(lambda: self._stub.GetSearch(request, timeout=self.timeout)).search

    def trial(self, search_id: str, number: int) -> common_pb2.Trial | None:
        # page_token is "after this number"
        request = controller_pb2.ListTrialsRequest(
            search_id=search_id, page_size=1, page_token=str(number - 1)
        )
        response = self._call(lambda: self._stub.ListTrials(request, timeout=self.timeout))
        found = [t for t in response.trials if t.number == number]
        return found[0] if found else None

    def cancel(self, search_id: str) -> common_pb2.Search:
        request = controller_pb2.CancelSearchRequest(search_id=search_id)
        return self._call(lambda: self._stub.CancelSearch(request, timeout=self.timeout)).search

    def close(self) -> None:
        self._channel.close()
