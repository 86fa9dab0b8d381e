"""The Python SDK: submit search specs to a controller, watch them, read the results.

    from mnas import Client
    with Client("127.0.0.1:50051") as client:
        search = client.submit("examples/quickstart.yaml")
        final = search.wait(timeout=3600)
        for trial in search.best(3):
            print(trial.number, trial.reward, trial.accuracy, trial.latency_seconds)

Results are the frozen dataclasses of :mod:`mnas.results` (states are string enums), each
with the message it was read from as ``proto``. A controller that checks tokens takes one
per client, ``Client(target, token=...)``; over TLS, ``tls=ClientTLS.from_files(ca="ca.pem")``
(with ``cert=`` and ``key=`` for mutual TLS). The whole guide: docs/sdk.md.

gRPC errors become :class:`MnasError` subclasses: :class:`InvalidSpec` (the message names
the field), :class:`SearchNotFound`, :class:`ControllerUnavailable`,
:class:`Unauthenticated`; a wait that runs out of time raises the builtin ``TimeoutError``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from mnas.client_errors import (
    ControllerUnavailable,
    InvalidSpec,
    MnasError,
    SearchExists,
    SearchNotFound,
    Unauthenticated,
)
from mnas.pareto import pareto_front
from mnas.results import Reference, SearchEvent, SearchInfo, SearchState, Trial, TrialState
from mnas.rpc import channel
from mnas.specfile import load_spec
from mnas.tls import ClientTLS
from mnas.v1 import common_pb2, controller_pb2, controller_pb2_grpc

if TYPE_CHECKING:
    import torch

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

    def searches(self) -> list[SearchInfo]:
        """Every search this client may see (with tokens: its user's own)."""
        response = self._call(
            lambda: self._stub.ListSearches(
                controller_pb2.ListSearchesRequest(), timeout=self.timeout
            )
        )
        return [SearchInfo.from_proto(s) for s in response.searches]

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
    """A submitted search: its state, events, trials and results.

    Results come as the dataclasses of :mod:`mnas.results`; ``proto`` is the controller's
    last answer as it came (a ``mnas.v1.Search`` message), as is each result's ``proto``.
    """

    def __init__(self, client: Client, search_id: str, info: common_pb2.Search) -> None:
        self._client = client
        self.id = search_id
        self._set(info)

    def _set(self, message: common_pb2.Search) -> SearchInfo:
        self.proto = message
        self.info = SearchInfo.from_proto(message)
        return self.info

    def refresh(self) -> SearchInfo:
        """The search as the controller reports it now."""
        return self._set(self._client._get(self.id))

    @property
    def state(self) -> SearchState:
        """As of the last answer (refresh, watch, wait, cancel)."""
        return self.info.state

    @property
    def done(self) -> bool:
        return self.info.finished

    @property
    def reference(self) -> Reference | None:
        """The reference network of ``spec.reference`` as of the last answer (refresh,
        watch): its name, architecture, state (pending, measured, failed) and, once
        measured, its held-out accuracy on the trials' proxy; None when the spec has none."""
        return self.info.reference

    def watch(self, *, timeout: float | None = None) -> Iterator[SearchEvent]:
        """A snapshot, then an event per trial started, retried and finished, until the end.

        ``timeout``: seconds to watch at most; ``TimeoutError`` when the search has not
        ended by then (``ControllerUnavailable`` when the controller cannot be reached).
        """
        client = self._client
        request = controller_pb2.WatchSearchRequest(search_id=self.id)
        stream = client._call(lambda: client._stub.WatchSearch(request, timeout=timeout))
        answered = False
        try:
            for message in stream:
                answered = True
                self._set(message.search)
                yield SearchEvent.from_proto(message)
        except grpc.RpcError as err:
            if timeout is None or err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise _translate(err, client.target) from None
            if not answered and self.refresh().finished:  # raises if it is unreachable
                return
            raise TimeoutError(
                f"search {self.id} has not finished within {timeout:g} s (it is {self.state})"
            ) from None
        finally:
            stream.cancel()  # type: ignore[no-untyped-call]

    def wait(self, *, timeout: float | None = None) -> SearchInfo:
        """Block until the search finishes; returns its final state.

        ``TimeoutError`` when it has not finished within ``timeout`` seconds (the search
        runs on); ``ControllerUnavailable`` when the controller cannot be reached.
        """
        for _ in self.watch(timeout=timeout):
            pass
        return self.refresh()

    def trials(self, *, page_size: int = 500) -> Iterator[Trial]:
        """Every trial by number, fetched a page at a time as the iteration reaches it."""
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
            for message in response.trials:
                yield Trial.from_proto(message)
            token = response.next_page_token
            if not token:
                return

    def trial(self, number: int) -> Trial | None:
        """Trial ``number``, or None when the search has no such trial yet."""
        client = self._client
        request = controller_pb2.ListTrialsRequest(
            search_id=self.id,
            page_size=1,
            page_token=str(number - 1),  # the page after it
        )
        response = client._call(lambda: client._stub.ListTrials(request, timeout=client.timeout))
        found = next((t for t in response.trials if t.number == number), None)
        return Trial.from_proto(found) if found is not None else None

    def completed(self) -> list[Trial]:
        """The completed trials (not those stopped early), by number."""
        return [t for t in self.trials() if t.state is TrialState.COMPLETED]

    def best(self, k: int = 5) -> list[Trial]:
        """The ``k`` completed trials with the highest reward."""
        return sorted(self.completed(), key=lambda t: (-(t.reward or 0.0), t.number))[:k]

    def pareto(self) -> list[Trial]:
        """Completed trials no other beats on both accuracy and latency, fastest first."""
        return pareto_front(
            self.completed(),
            accuracy=lambda t: t.accuracy or 0.0,
            latency=lambda t: t.latency_seconds or 0.0,
        )

    def to_dataframe(self) -> Any:
        """Every trial as a row of a ``pandas.DataFrame`` indexed by trial number (columns:
        :meth:`mnas.results.Trial.to_row`). Needs pandas, which mnas does not install."""
        try:
            pandas = importlib.import_module("pandas")
        except ImportError:
            raise ImportError(
                "Search.to_dataframe needs pandas, which mnas does not install: pip install pandas"
            ) from None
        rows = [t.to_row() for t in self.trials()]
        return pandas.DataFrame(rows, columns=Trial.columns()).set_index("number")

    def weights(self, trial: int | Trial) -> bytes:
        """The trained weights kept for ``trial`` (``budget.keep_weights``): ``torch.save``
        bytes of its state_dict; :meth:`load_model` puts them into a module."""
        number = trial.number if isinstance(trial, Trial) else trial
        client = self._client
        request = controller_pb2.GetWeightsRequest(search_id=self.id, trial=number)
        stream = client._call(lambda: client._stub.GetWeights(request, timeout=client.timeout))
        chunks: list[bytes] = []
        try:
            for chunk in stream:
                chunks.append(chunk.data)
        except grpc.RpcError as err:
            raise _translate(err, client.target) from None
        return b"".join(chunks)

    def load_model(
        self, trial: int | Trial, *, device: str | torch.device = "cpu"
    ) -> torch.nn.Module:
        """The PyTorch module of ``trial`` with its kept weights loaded, in eval mode: see
        :func:`mnas.models.load_model`."""
        from mnas.models import load_model

        return load_model(self, trial, device=device)

    def cancel(self) -> SearchInfo:
        client = self._client
        response = client._call(
            lambda: client._stub.CancelSearch(
                controller_pb2.CancelSearchRequest(search_id=self.id), timeout=client.timeout
            )
        )
        return self._set(response.search)

    def __repr__(self) -> str:
        return f"Search({self.id!r}, {self.state})"
