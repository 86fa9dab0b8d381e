"""MnasSearch objects through the official ``kubernetes`` client: list, watch, patch, events.

Every write is a JSON merge patch (``application/merge-patch+json``, what custom resources
take): the status through the status subresource, finalizers on the object itself with its
resourceVersion, so a stale finalizer list is refused with 409 Conflict rather than written.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from kubernetes import client, config, watch

from services.operator.reconcile import utc_now
from services.operator.resource import GROUP, KIND, PLURAL, VERSION

__all__ = ["KubeApi", "load_api_client"]

_logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
COMPONENT = "mnas-operator"


def load_api_client(kubeconfig: str | None) -> client.ApiClient:
    """In a Pod without ``kubeconfig``: the service account's credentials; else the
    kubeconfig file (its current context)."""
    if kubeconfig is None:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            return client.ApiClient()
        except config.ConfigException:
            _logger.info("not in a cluster; using the default kubeconfig")
    api_client: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig
    )
    return api_client


class KubeApi:
    """MnasSearch objects of ``namespace`` (every namespace when None)."""

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str | None,
        *,
        request_timeout: float = 30.0,
    ) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self._timeout = request_timeout
        self._watch: watch.Watch | None = None

    def list_objects(self) -> list[dict[str, Any]]:
        if self.namespace is None:
            found = self._custom.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, _request_timeout=self._timeout
            )
        else:
            found = self._custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, _request_timeout=self._timeout
            )
        items: list[dict[str, Any]] = dict(found).get("items") or []  # type: ignore[call-overload]
        return items

    def watch_objects(self, timeout_seconds: int) -> Iterator[dict[str, Any]]:
        """Change events until the server ends the watch after ``timeout_seconds`` (or the
        read times out a little later, for servers that keep it open) or :meth:`stop_watch`."""
        stop = self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        kwargs: dict[str, Any] = {
            "timeout_seconds": timeout_seconds,
            "_request_timeout": (self._timeout, timeout_seconds + 5),
        }
        if self.namespace is None:
            stream = stop.stream(  # type: ignore[no-untyped-call]
                self._custom.list_cluster_custom_object, GROUP, VERSION, PLURAL, **kwargs
            )
        else:
            stream = stop.stream(  # type: ignore[no-untyped-call]
                self._custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                **kwargs,
            )
        yield from stream

    def stop_watch(self) -> None:
        """End the watch under way at its next event."""
        if self._watch is not None:
            self._watch.stop()  # type: ignore[no-untyped-call]

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self._custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": dict(status)},
            _content_type=MERGE_PATCH,
            _request_timeout=self._timeout,
        )

    def set_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str | None
    ) -> None:
        metadata: dict[str, Any] = {"finalizers": finalizers}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        self._custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"metadata": metadata},
            _content_type=MERGE_PATCH,
            _request_timeout=self._timeout,
        )

    def event(self, obj: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        """Record a core/v1 Event on ``obj``; a failure is logged, never raised."""
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or self.namespace or "default")
        now = utc_now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            event = client.CoreV1Event.from_dict(body)
            assert event is not None
            self._core.create_namespaced_event(namespace, event, _request_timeout=self._timeout)
        except Exception as err:  # events are best effort
            _logger.warning("could not record event %s on %s: %s", reason, meta.get("name"), err)
