"""Worker endpoints of one kind (trainers or latency services) and their free slots.

Endpoints come from configuration: a list of ``host:port`` addresses, or ``dns:///name:port``
naming a headless Service whose A records are re-resolved as pods come and go. Each
endpoint reports how many jobs it takes at once (GetCapacity); the pool never hands out
more. An endpoint that fails is benched and probed again after a back-off. An endpoint that
refuses a job for want of a free slot (one a cancelled job has not given back yet) gets no
new job for a short pause.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

__all__ = ["Endpoint", "NoWorkers", "WorkerPool", "resolve_targets"]

_logger = logging.getLogger(__name__)

DNS_PREFIX = "dns:///"


class NoWorkers(Exception):
    """No endpoint of this kind is configured or reachable."""


@dataclass
class Endpoint:
    address: str
    capacity: int = 0  # 0 until probed
    in_use: int = 0
    healthy: bool = False
    failures: int = 0
    probe_after: float = 0.0  # monotonic time of the next probe when unhealthy
    busy_until: float = 0.0  # monotonic time before which it takes no job (it refused one)

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.in_use) if self.healthy else 0


def resolve_targets(targets: Sequence[str]) -> list[str]:
    """Expand ``dns:///name:port`` entries into one address per A/AAAA record."""
    addresses: list[str] = []
    for target in targets:
        if not target.startswith(DNS_PREFIX):
            addresses.append(target)
            continue
        host, _, port = target.removeprefix(DNS_PREFIX).rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"endpoint {target!r}: expected dns:///NAME:PORT")
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except socket.gaierror as err:
            _logger.warning("cannot resolve %s: %s", target, err)
            continue
        for _family, _type, _proto, _name, sockaddr in infos:
            ip = str(sockaddr[0])
            address = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
            if address not in addresses:
                addresses.append(address)
    return addresses


class WorkerPool:
    """Hands out slots on endpoints within their reported capacity.

    ``probe(address)`` returns the endpoint's capacity or raises when it is unreachable.
    """

    def __init__(
        self,
        kind: str,
        targets: Sequence[str],
        probe: Callable[[str], int],
        *,
        refresh_seconds: float = 30.0,
        backoff_seconds: float = 2.0,
        max_backoff_seconds: float = 60.0,
        busy_seconds: float = 1.0,
        resolve: Callable[[Sequence[str]], list[str]] = resolve_targets,
    ) -> None:
        """``resolve`` expands the targets into addresses (DNS by default); it runs again
        every ``refresh_seconds``, so pods a Deployment gains are used and pods it loses
        are dropped once their running jobs have ended."""
        self.kind = kind
        self._targets = list(targets)
        self._probe = probe
        self._resolve = resolve
        self._refresh = refresh_seconds
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._busy = busy_seconds
        self._endpoints: dict[str, Endpoint] = {}
        self._cond = threading.Condition()
        self._next_refresh = 0.0
        self._closed = False

    # -- membership ------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> None:
        """Re-resolve the targets and probe endpoints that are new or due."""
        now = time.monotonic()
        with self._cond:
            if not force and now < self._next_refresh:
                due = [
                    e for e in self._endpoints.values() if not e.healthy and e.probe_after <= now
                ]
                if not due:
                    return
            self._next_refresh = now + self._refresh
            addresses = self._resolve(self._targets)
            if not addresses and self._endpoints:
                # A failed DNS lookup looks the same as no pods: keep the endpoints known
                # (an endpoint that is really gone fails its next call and is benched).
                _logger.warning(
                    "%s: no address for %s now; keeping the %d known",
                    self.kind,
                    ", ".join(self._targets),
                    len(self._endpoints),
                )
                addresses = list(self._endpoints)
            for gone in set(self._endpoints) - set(addresses):
                endpoint = self._endpoints[gone]
                if endpoint.in_use == 0:
                    del self._endpoints[gone]
                else:  # takes no new jobs; dropped once its running ones end
                    endpoint.healthy = False
                    endpoint.probe_after = math.inf
            for address in addresses:
                endpoint = self._endpoints.setdefault(address, Endpoint(address))
                if endpoint.probe_after == math.inf:  # listed again: probe it anew
                    endpoint.probe_after = 0.0
            to_probe = [
                e.address
                for e in self._endpoints.values()
                if not e.healthy and e.probe_after <= now
            ]
        for address in to_probe:
            self._probe_one(address)

    def _probe_one(self, address: str) -> None:
        try:
            capacity = self._probe(address)
        except Exception as err:
            with self._cond:
                endpoint = self._endpoints.get(address)
                if endpoint is not None:
                    self._bench(endpoint)
            _logger.info("%s %s unreachable: %s", self.kind, address, err)
            return
        with self._cond:
            endpoint = self._endpoints.get(address)
            if endpoint is not None and endpoint.probe_after != math.inf:  # not gone meanwhile
                endpoint.capacity = max(1, capacity)
                endpoint.healthy = True
                endpoint.failures = 0
                self._cond.notify_all()
        _logger.info("%s %s takes %d job(s) at once", self.kind, address, capacity)

    def _bench(self, endpoint: Endpoint) -> None:
        endpoint.healthy = False
        endpoint.failures += 1
        delay = min(self._max_backoff, self._backoff * 2 ** (endpoint.failures - 1))
        endpoint.probe_after = time.monotonic() + delay

    # -- slots -----------------------------------------------------------------------

    def acquire(
        self,
        *,
        avoid: Collection[str] = (),
        cancelled: Callable[[], bool] | None = None,
        poll_seconds: float = 0.5,
    ) -> str:
        """Block until a slot is free and take it; prefer endpoints not in ``avoid``.

        Raises :class:`NoWorkers` when ``cancelled()`` turns true while waiting.
        """
        while True:
            self.refresh()
            with self._cond:
                if self._closed:
                    raise NoWorkers(f"{self.kind} pool closed")
                now = time.monotonic()
                free = [e for e in self._endpoints.values() if e.free > 0 and e.busy_until <= now]
                preferred = [e for e in free if e.address not in avoid] or free
                if preferred:
                    endpoint = max(preferred, key=lambda e: (e.free, -e.in_use))
                    endpoint.in_use += 1
                    return endpoint.address
                if cancelled is not None and cancelled():
                    raise NoWorkers(f"cancelled while waiting for a {self.kind}")
                self._cond.wait(poll_seconds)

    def release(self, address: str, *, failed: bool = False, busy: bool = False) -> None:
        """Give a slot back; ``failed`` benches the endpoint until it answers a probe;
        ``busy`` (it refused the job: no free slot) keeps new jobs off it for a pause."""
        with self._cond:
            endpoint = self._endpoints.get(address)
            if endpoint is not None:
                endpoint.in_use = max(0, endpoint.in_use - 1)
                if failed:
                    self._bench(endpoint)
                elif busy:
                    endpoint.busy_until = time.monotonic() + self._busy
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def snapshot(self) -> list[Endpoint]:
        with self._cond:
            return [Endpoint(**vars(e)) for e in self._endpoints.values()]

    def capacity(self) -> int:
        with self._cond:
            return sum(e.capacity for e in self._endpoints.values() if e.healthy)
