"""The Python SDK: submit search specs to a controller, watch them, read the results.

    from mnas import Client
    with Client("127.0.0.1:50051") as client:
        search = client.submit("examples/quickstart.yaml")
        for event in search.watch():
            ...
        print(search.best(3), search.pareto())

A controller that checks tokens takes one per client, ``Client(target, token=...)``; over
TLS, ``tls=ClientTLS.from_files(ca="ca.pem")`` (with ``cert=`` and ``key=`` for mutual TLS).

gRPC errors become :class:`MnasError` subclasses: :class:`InvalidSpec` (the message names
the field), :class:`SearchNotFound`, :class:`ControllerUnavailable`,
:class:`Unauthenticated`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc

from mnas.errors import NotFound, ServiceUnreachable
from mnas.latency import reported_seconds
from mnas.pareto import pareto_front
from mnas.rpc import channel
from mnas.specfile import load_spec
from mnas.tls import ClientTLS
from mnas.v1 import common_pb2, controller_pb2, controller_pb2_grpc

__all__ = [
    "Client",
    "ControllerUnavailable",
    "InvalidSpec",
    "MnasError",
    "Search",
    "SearchExists",
    "SearchNotFound",
    "Unauthenticated",
]

T = TypeVar("T")


class MnasError(Exception):
    """A call to the controller failed."""


class InvalidSpec(MnasError, ValueError):
    """The controller refused the spec; the message names the field."""


class SearchNotFound(MnasError, NotFound, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "search not found"


class SearchExists(MnasError):
    """A search with the id asked for exists already (a repeated submission)."""


class ControllerUnavailable(MnasError, ServiceUnreachable, ConnectionError):
    """The controller could not be reached (after retries)."""


class Unauthenticated(MnasError, PermissionError):
    """The controller checks tokens and this client's was missing or not known."""


_ERRORS: dict[grpc.StatusCode, type[MnasError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidSpec,
    grpc.StatusCode.NOT_FOUND: SearchNotFound,
    grpc.StatusCode.ALREADY_EXISTS: SearchExists,
    grpc.StatusCode.UNAVAILABLE: ControllerUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: ControllerUnavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}


def _translate(err: grpc.RpcError, target: str) -> MnasError:
    code = err.code()
    details = err.details()
    kind = _ERRORS.get(code, MnasError)
    if kind is ControllerUnavailable:
        return kind(f"controller at {target} unavailable: {details}")
    return kind(details if kind is not MnasError else f"{code.name}: {details}")


Done = (
    common_pb2.SEARCH_STATE_SUCCEEDED,
    common_pb2.SEARCH_STATE_FAILED,
    common_pb2.SEARCH_STATE_CANCELLED,
)


class Client:
    """A connection to one controller: over TLS when ``tls`` is given, sending ``token``
    as a bearer token with every call when it is given."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout: float = 30.0,
        token: str | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._channel = channel(target, tls=tls, token=token)
        self._stub = controller_pb2_grpc.ControllerStub(self._channel)

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except grpc.RpcError as err:
            raise _translate(err, self.target) from None

    def submit(self, spec: common_pb2.SearchSpec | str | Path, *, search_id: str = "") -> Search:
        """Submit a spec (a message or a YAML/JSON file path); returns its handle.

        ``search_id``: the id to give the search (lowercase letters, digits, '-'); a
        second submission with the same id raises ``SearchExists``, so retrying is safe.
        ``SearchExists`` may also answer a call whose first attempt created the search but
        whose answer was lost (the channel retries): ``search(search_id)`` then gets it.
        """
        message = spec if isinstance(spec, common_pb2.SearchSpec) else load_spec(spec)
        request = controller_pb2.SubmitSearchRequest(spec=message, search_id=search_id)
        response = self._call(lambda: self._stub.SubmitSearch(request, timeout=self.timeout))
        return Search(self, response.search.id, response.search)

    def search(self, search_id: str) -> Search:
        """The handle of an existing search (``SearchNotFound`` if there is none)."""
        info = self._get(search_id)
        return Search(self, search_id, info)

    def searches(self) -> list[common_pb2.Search]:
        response = self._call(
            lambda: self._stub.ListSearches(
                controller_pb2.ListSearchesRequest(), timeout=self.timeout
            )
        )
        return list(response.searches)

    def _get(self, search_id: str) -> common_pb2.Search:
        response = self._call(
            lambda: self._stub.GetSearch(
                controller_pb2.GetSearchRequest(search_id=search_id), timeout=self.timeout
            )
        )
        return response.search

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Search:
    """A submitted search: its state, events, trials and results."""

    def __init__(self, client: Client, search_id: str, info: common_pb2.Search) -> None:
        self._client = client
        self.id = search_id
        self.info = info

    def refresh(self) -> common_pb2.Search:
        self.info = self._client._get(self.id)
        return self.info

    @property
    def done(self) -> bool:
        return self.info.state in Done

    @property
    def reference(self) -> common_pb2.Reference | None:
        """The reference network of ``spec.reference`` as of the last answer (refresh,
        watch): its name, architecture, state (pending, measured, failed) and, once
        measured, its held-out accuracy on the trials' proxy; None when the spec has none."""
        return self.info.reference if self.info.HasField("reference") else None

    def watch(
        self, *, timeout: float | None = None
    ) -> Iterator[controller_pb2.WatchSearchResponse]:
        """A snapshot, then an event per trial started, retried and finished, until the end."""
        client = self._client
        stream = client._call(
            lambda: client._stub.WatchSearch(
                controller_pb2.WatchSearchRequest(search_id=self.id), timeout=timeout
            )
        )
        try:
            for event in stream:
                self.info = event.search
                yield event
        except grpc.RpcError as err:
            raise _translate(err, client.target) from None
        finally:
            stream.cancel()  # type: ignore[no-untyped-call]

    def wait(self, *, timeout: float | None = None) -> common_pb2.Search:
        """Block until the search finishes; returns its final state."""
        for _ in self.watch(timeout=timeout):
            pass
        return self.refresh()

    def trials(self, *, page_size: int = 500) -> Iterator[common_pb2.Trial]:
        """Every trial by number, fetched page by page."""
        client = self._client
        token = ""
        while True:
            request = controller_pb2.ListTrialsRequest(
                search_id=self.id, page_size=page_size, page_token=token
            )
            response = client._call(
                lambda r=request: client._stub.ListTrials(  # type: ignore[misc]
                    r, timeout=client.timeout
                )
            )
            yield from response.trials
            token = response.next_page_token
            if not token:
                return

    def trial(self, number: int) -> common_pb2.Trial | None:
        """Trial ``number``, or None when the search has no such trial yet."""
        client = self._client
        request = controller_pb2.ListTrialsRequest(
            search_id=self.id,
            page_size=1,
            page_token=str(number - 1),  # the page after it
        )
        response = client._call(lambda: client._stub.ListTrials(request, timeout=client.timeout))
        return next((t for t in response.trials if t.number == number), None)

    def completed(self) -> list[common_pb2.Trial]:
        return [t for t in self.trials() if t.state == common_pb2.TRIAL_STATE_COMPLETED]

    def best(self, k: int = 5) -> list[common_pb2.Trial]:
        """The ``k`` completed trials with the highest reward."""
        return sorted(self.completed(), key=lambda t: (-t.reward, t.number))[:k]

    def pareto(self) -> list[common_pb2.Trial]:
        """Completed trials no other beats on both accuracy and latency, fastest first."""
        return pareto_front(
            self.completed(),
            accuracy=lambda t: t.training.accuracy,
            latency=lambda t: reported_seconds(t.latency),
        )

    def weights(self, trial: int) -> bytes:
        """The trained weights kept for ``trial`` (``budget.keep_weights``): ``torch.save``
        bytes of its state_dict, for ``torch.load`` and the builder's module."""
        client = self._client
        request = controller_pb2.GetWeightsRequest(search_id=self.id, trial=trial)
        stream = client._call(lambda: client._stub.GetWeights(request, timeout=client.timeout))
        chunks: list[bytes] = []
        try:
            for chunk in stream:
                chunks.append(chunk.data)
        except grpc.RpcError as err:
            raise _translate(err, client.target) from None
        return b"".join(chunks)

    def cancel(self) -> common_pb2.Search:
        client = self._client
        response = client._call(
            lambda: client._stub.CancelSearch(
                controller_pb2.CancelSearchRequest(search_id=self.id), timeout=client.timeout
            )
        )
        self.info = response.search
        return self.info

    def __repr__(self) -> str:
        return f"Search({self.id!r}, {common_pb2.SearchState.Name(self.info.state)})"
