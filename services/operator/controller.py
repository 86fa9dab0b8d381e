"""The controller, through the SDK (:class:`mnas.Client`), as the reconciler's
:class:`~services.operator.reconcile.ControllerPort`: the SDK's errors become the
reconciler's."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from mnas.client import (
    Client,
    ControllerUnavailable,
    InvalidSpec,
    MnasError,
    Search,
    SearchExists,
    SearchNotFound,
    Unauthenticated,
)
from mnas.tls import ClientTLS
from mnas.v1 import common_pb2
from services.operator import reconcile

__all__ = ["GrpcController"]

# The SDK's errors and the reconciler's they become; others propagate.
_ERRORS: tuple[tuple[type[MnasError], type[Exception]], ...] = (
    (SearchExists, reconcile.AlreadyExists),
    (InvalidSpec, reconcile.Rejected),  # the message starts with the field path
    (SearchNotFound, reconcile.SearchGone),
    (ControllerUnavailable, reconcile.ControllerUnavailable),
    # A wrong or missing --token: retried like an outage, the message says why.
    (Unauthenticated, reconcile.ControllerUnavailable),
)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except MnasError as err:
        for sdk, ours in _ERRORS:
            if isinstance(err, sdk):
                raise ours(str(err)) from None
        raise


class GrpcController:
    """Calls to one controller, each with a deadline of ``timeout`` seconds; ``token``
    and ``tls`` as :class:`mnas.Client` takes them (the operator's token is an admin's:
    it manages every MnasSearch's search)."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 30.0,
        token: str | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        self.target = target
        self._client = Client(target, timeout=timeout, token=token, tls=tls)

    def _search(self, search_id: str) -> Search:
        return Search(self._client, search_id, common_pb2.Search(id=search_id))

    def submit(self, spec: common_pb2.SearchSpec, search_id: str) -> common_pb2.Search:
        with _translated():
            return self._client.submit(spec, search_id=search_id).proto

    def get(self, search_id: str) -> common_pb2.Search:
        with _translated():
            return self._search(search_id).refresh().proto

    def trial(self, search_id: str, number: int) -> common_pb2.Trial | None:
        with _translated():
            trial = self._search(search_id).trial(number)
            return trial.proto if trial is not None else None

    def cancel(self, search_id: str) -> common_pb2.Search:
        with _translated():
            return self._search(search_id).cancel().proto

    def close(self) -> None:
        self._client.close()
