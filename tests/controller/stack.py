"""A controller on loopback, on in-process workers (:func:`local_stack`, for tests whose
subject is what the controller, the SDK or the CLI does) or on the real latency and reward
services and a given trainer servicer (:func:`controller_stack`, for tests whose subject
is the calls to the workers: mutual TLS to them, a latency service given by address);
optionally with the controller checking tokens."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from mnas.tls import ServerTLS
from mnas.v1 import trainer_pb2_grpc
from services.common.server import RunningServer, build_server
from services.controller.backends import Workers
from services.controller.clients import Backends
from services.controller.core import Controller
from services.controller.gate import DEFAULT_SLOTS
from services.controller.metrics import ControllerMetrics
from services.controller.server import make_server
from services.controller.store import Store
from services.controller.users import Users
from services.latency.server import make_server as make_latency_server
from services.reward.server import make_server as make_reward_server
from tests.common.certs import Pki


@dataclass(frozen=True)
class Stack:
    address: str  # the controller's
    store: Store
    latency_registry: CollectorRegistry  # the latency server's (empty in process)
    controller: Controller


@contextlib.contextmanager
def controller_stack(
    tmp_path: Path,
    trainer: trainer_pb2_grpc.TrainerServicer,
    *,
    latency: str | None = None,
    pki: Pki | None = None,
    users: Users | None = None,
    max_workers: int = 256,
    work_slots: int = DEFAULT_SLOTS,
) -> Iterator[Stack]:
    """``latency``: the address of a latency service to use instead of a new one; ``pki``:
    every server asks for mutual TLS with its certificates, and the controller calls the
    workers with its client certificate; ``users``: the controller checks their tokens."""
    tls = pki.server(mutual=True) if pki is not None else None
    latency_registry = CollectorRegistry()
    servers: list[RunningServer] = [
        build_server(
            service_names=["mnas.v1.Trainer"],
            add_servicers=lambda s: trainer_pb2_grpc.add_TrainerServicer_to_server(trainer, s),
            registry=CollectorRegistry(),
            tls=tls,
        ),
        make_reward_server(registry=CollectorRegistry(), tls=tls),
    ]
    if latency is None:
        servers.append(make_latency_server(registry=latency_registry, tls=tls))
        latency = servers[-1].address
    backends = Backends(
        trainers=[servers[0].address],
        latency=[latency],
        reward=servers[1].address,
        tls=pki.client() if pki is not None else None,
    )
    try:
        with _controller(
            tmp_path, backends, tls=tls, users=users, max_workers=max_workers, work_slots=work_slots
        ) as (address, store, core):
            yield Stack(address, store, latency_registry, core)
    finally:
        for server in servers:
            server.stop(0)


@contextlib.contextmanager
def local_stack(
    tmp_path: Path,
    workers: Workers,
    *,
    users: Users | None = None,
    max_workers: int = 256,
    work_slots: int = DEFAULT_SLOTS,
) -> Iterator[Stack]:
    """A controller served on loopback, its workers ``workers`` (in process); ``users``:
    the controller checks their tokens."""
    with _controller(
        tmp_path, workers, users=users, max_workers=max_workers, work_slots=work_slots
    ) as (address, store, core):
        yield Stack(address, store, CollectorRegistry(), core)


@contextlib.contextmanager
def _controller(
    tmp_path: Path,
    workers: Workers,
    *,
    tls: ServerTLS | None = None,
    users: Users | None = None,
    max_workers: int = 256,
    work_slots: int = DEFAULT_SLOTS,
) -> Iterator[tuple[str, Store, Controller]]:
    store = Store.open(str(tmp_path / "mnas.db"))
    core = Controller(store, workers, ControllerMetrics(CollectorRegistry()), work_slots=work_slots)
    controller = make_server(
        core, registry=CollectorRegistry(), tls=tls, users=users, max_workers=max_workers
    )
    try:
        yield controller.address, store, core
    finally:
        controller.stop(0)
        store.close()
