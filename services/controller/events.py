"""Progress events of running searches, fanned out to watchers."""

from __future__ import annotations

import queue
import threading
from collections import defaultdict

from mnas.v1 import controller_pb2

__all__ = ["EventHub", "Subscription"]


class Subscription:
    """One watcher's queue of events for one search."""

    def __init__(self, hub: EventHub, search_id: str) -> None:
        self._hub = hub
        self.search_id = search_id
        self.queue: queue.Queue[controller_pb2.WatchSearchResponse] = queue.Queue()

    def get(self, timeout: float) -> controller_pb2.WatchSearchResponse | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._hub.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class EventHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, list[Subscription]] = defaultdict(list)

    def subscribe(self, search_id: str) -> Subscription:
        subscription = Subscription(self, search_id)
        with self._lock:
            self._subscribers[search_id].append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            subscribers = self._subscribers.get(subscription.search_id, [])
            if subscription in subscribers:
                subscribers.remove(subscription)
            if not subscribers:
                self._subscribers.pop(subscription.search_id, None)

    def watched(self, search_id: str) -> bool:
        """Whether anyone watches the search now (events for nobody need not be built)."""
        with self._lock:
            return search_id in self._subscribers

    def publish(self, search_id: str, event: controller_pb2.WatchSearchResponse) -> None:
        with self._lock:
            subscribers = list(self._subscribers.get(search_id, []))
        for subscription in subscribers:
            subscription.queue.put(event)
