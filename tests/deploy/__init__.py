"""Tests of what is deployed (container images, the Kubernetes manifests under ``k8s/``),

No cluster exists: every install is rendered with ``kubectl kustomize`` (on the PATH, with
its built-in kustomize) and checked offline.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"

#: The oldest Kubernetes release docs/kubernetes.md promises (native sidecar containers
#: are on by default from 1.29).
OLDEST_KUBERNETES = "1.29.0"

WORKLOAD_KINDS = ("Deployment", "DaemonSet", "StatefulSet")
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
#: Probe handlers the kubelet runs from the node against the pod's IP (not its loopback).
NETWORK_PROBES = ("tcpSocket", "httpGet", "grpc")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
ADB_DEFAULT_PORT = 5037

#: A Service of ours named in a flag or value: ``NAME[.NAMESPACE[.svc[.cluster.local]]]``
#: and an optional ``:PORT`` (``dns:///`` and URLs included).
SERVICE_REF = re.compile(
    r"(?<![\w.-])(?P<name>mnas-[a-z0-9-]+)"
    r"(?:\.(?P<namespace>[a-z0-9-]+)(?:\.svc(?:\.cluster\.local)?)?)?"
    r"(?::(?P<port>\d+))?(?![\w.-])"
)

Resource = dict[str, Any]


class RenderError(Exception):
    """``kubectl kustomize`` failed; the message is its error output."""


def installs() -> dict[str, Path]:
    """Every install by name: ``default`` (``k8s/`` itself) and each ``k8s/installs/*``."""
    found = {"default": K8S}
    for path in sorted((K8S / "installs").iterdir()):
        if (path / "kustomization.yaml").is_file():
            found[path.name] = path
    return found


@functools.cache
def render(path: Path) -> tuple[Resource, ...]:
    """The resources ``kubectl kustomize PATH`` prints, in its order."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RenderError("kubectl is not on the PATH (it renders the manifests)")
    done = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RenderError(
            f"kubectl kustomize {path.relative_to(REPO)} exited {done.returncode}:\n"
            f"{done.stderr.strip()}"
        )
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def rendered_text(path: Path) -> str:
    """The rendering as one YAML stream (what ``kubectl apply -k`` would send)."""
    return yaml.safe_dump_all(render(path), sort_keys=False)


def ref(resource: Resource) -> str:
    """``Kind/name``, for messages and test ids."""
    return f"{resource['kind']}/{resource['metadata']['name']}"


def namespace_of(resource: Resource) -> str | None:
    """The namespace a namespaced object lands in (None for cluster-scoped ones)."""
    namespace = resource["metadata"].get("namespace")
    return None if namespace is None else str(namespace)


def find(
    resources: tuple[Resource, ...], kind: str, name: str, namespace: str | None = None
) -> Resource | None:
    """The object of that kind and name (in ``namespace``, where given)."""
    return next(
        (
            r
            for r in resources
            if r["kind"] == kind
            and r["metadata"]["name"] == name
            and (namespace is None or namespace_of(r) == namespace)
        ),
        None,
    )


def workloads(resources: tuple[Resource, ...]) -> list[Resource]:
    """The Deployments, DaemonSets and StatefulSets."""
    return [r for r in resources if r["kind"] in WORKLOAD_KINDS]


def pod_spec(workload: Resource) -> Resource:
    spec: Resource = workload["spec"]["template"]["spec"]
    return spec


def all_containers(workload: Resource) -> Iterator[Resource]:
    """Init containers (native sidecars among them) first, then the containers."""
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def is_sidecar(container: Resource) -> bool:
    """An init container that keeps running beside the others (``restartPolicy: Always``)."""
    return container.get("restartPolicy") == "Always"


def container_port(container: Resource, name: str) -> int | None:
    for port in container.get("ports", []):
        if port.get("name") == name:
            return int(port["containerPort"])
    return None


def serves_grpc(container: Resource) -> bool:
    """Our services name their gRPC port ``grpc``."""
    return container_port(container, "grpc") is not None


def flag(container: Resource, name: str) -> str | None:
    """The value of ``--name=VALUE`` (or ``--name VALUE``) in the container's arguments."""
    words = [*container.get("command", []), *container.get("args", [])]
    for i, word in enumerate(words):
        if word.startswith(f"--{name}="):
            return str(word.split("=", 1)[1])
        if word == f"--{name}" and i + 1 < len(words):
            return str(words[i + 1])
    return None


def probe_port(container: Resource, probe: Resource) -> int | None:
    """The port number a network probe (tcpSocket, httpGet, gRPC) connects to."""
    for handler in NETWORK_PROBES:
        if handler in probe:
            port = probe[handler]["port"]
            return container_port(container, port) if isinstance(port, str) else int(port)
    return None


def loopback_ports(container: Resource) -> set[int]:
    """The ports the container's command binds on the pod's loopback only: an adb server
    without ``-a``, and a service's ``--port`` and ``--metrics-port`` under a loopback
    ``--host``."""
    words = [*container.get("command", []), *container.get("args", [])]
    ports: set[int] = set()
    if words and Path(words[0]).name == "adb" and "server" in words and "-a" not in words:
        at = words.index("-P") if "-P" in words else -1
        ports.add(int(words[at + 1]) if at >= 0 else ADB_DEFAULT_PORT)
    if flag(container, "host") in LOOPBACK_HOSTS:
        for name in ("port", "metrics-port"):
            value = flag(container, name)
            if value is not None:
                ports.add(int(value))
    return ports
