"""What the operator's Kubernetes adapter sends: merge patches, the finalizer list with
the object's resourceVersion (so a real API server refuses a stale list with 409), the
status through its subresource. The client's API object is replaced by a recorder: no
API server is involved."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from services.operator.kube import MERGE_PATCH, KubeApi


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, args, kwargs))

        return record


def test_finalizers_and_status_are_merge_patches_guarded_by_resource_version() -> None:
    api = KubeApi(client.ApiClient(), "mnas")
    recorder = Recorder()
    api._custom = recorder  # type: ignore[assignment]
    api.set_finalizers("mnas", "s", ["mnas.dev/cancel-search"], "41")
    api.patch_status("mnas", "s", {"state": "Running"})
    (name, args, kwargs), (status_name, status_args, status_kwargs) = recorder.calls
    assert name == "patch_namespaced_custom_object"
    assert args == (
        "mnas.dev",
        "v1alpha1",
        "mnas",
        "mnassearches",
        "s",
        {"metadata": {"finalizers": ["mnas.dev/cancel-search"], "resourceVersion": "41"}},
    )
    assert kwargs["_content_type"] == MERGE_PATCH == "application/merge-patch+json"
    assert status_name == "patch_namespaced_custom_object_status"
    assert status_args[-1] == {"status": {"state": "Running"}}
    assert status_kwargs["_content_type"] == MERGE_PATCH
