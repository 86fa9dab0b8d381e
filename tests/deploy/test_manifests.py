"""The Kubernetes installs under ``k8s/``, rendered and checked offline.

No cluster exists: ``kubectl kustomize`` renders the default install and every install
under ``k8s/installs/``, ``kubernetes-validate --strict`` checks each rendering against the
schemas of the oldest Kubernetes release the docs promise (and of the newest it knows),
and the tests below check what the schemas cannot: probes, security contexts, resources,
labels, which pods the NetworkPolicies let talk to which, and what each install adds.
Whether each container's command really starts its service is
``test_manifest_commands.py``'s business.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from tests.deploy import (
    K8S,
    OLDEST_KUBERNETES,
    REPO,
    RenderError,
    Resource,
    all_containers,
    container_port,
    find,
    flag,
    installs,
    is_sidecar,
    pod_spec,
    ref,
    render,
    serves_grpc,
    workloads,
)

INSTALLS = installs()
EXPECTED_INSTALLS = {"default", "standalone", "postgres", "gpu", "phones"}
NEWEST_KUBERNETES = kv_utils.latest_version()
NAMESPACE = "mnas"
SELECTOR_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/component")
GRPC_PORT, METRICS_PORT = 50051, 9090

# The one container allowed to be privileged, and why (docs/kubernetes.md has the table).
PRIVILEGED = {
    ("phones", "DaemonSet/mnas-latency", "adb"): "USB access to the phones: the device "
    "nodes under /dev/bus/usb, which appear anew whenever a phone re-enumerates",
}
# Pods that talk to the Kubernetes API and so keep a service account token.
API_CLIENTS = {"operator"}


def resources_of(name: str) -> tuple[Resource, ...]:
    try:
        return render(INSTALLS[name])
    except RenderError as err:
        message = str(err)
    pytest.fail(message, pytrace=False)  # outside the handler: no exception chain


def each_container(name: str) -> Iterator[tuple[Resource, Resource]]:
    for workload in workloads(resources_of(name)):
        for container in all_containers(workload):
            yield workload, container


def where(name: str, workload: Resource, container: Resource) -> str:
    return f"{name}: {ref(workload)} container {container['name']}"


every_install = pytest.mark.parametrize("name", sorted(INSTALLS))


# --- rendering and schemas ---------------------------------------------------------------


def test_every_install_is_there() -> None:
    """The default install and the four the docs describe exist as kustomizations."""
    assert set(INSTALLS) == EXPECTED_INSTALLS
    assert (K8S / "kustomization.yaml").is_file()


@every_install
def test_install_renders(name: str) -> None:
    """``kubectl kustomize`` renders the install (exit 0) into namespaced objects in mnas,
    with the Namespace object itself among them."""
    resources = resources_of(name)
    assert resources
    namespace = find(resources, "Namespace", NAMESPACE)
    assert namespace is not None, f"{name}: no Namespace {NAMESPACE}"
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole",
                      "ClusterRoleBinding"}
    for resource in resources:
        if resource["kind"] not in cluster_scoped:
            assert resource["metadata"].get("namespace") == NAMESPACE, f"{name}: {ref(resource)}"


def test_oldest_promised_release_has_schemas() -> None:
    """kubernetes-validate still ships schemas for the oldest release we promise."""
    assert OLDEST_KUBERNETES in kv_utils.all_versions()
    docs = (REPO / "docs" / "kubernetes.md").read_text()
    assert f"Kubernetes {OLDEST_KUBERNETES.rsplit('.', 1)[0]}" in docs


@every_install
@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, NEWEST_KUBERNETES])
def test_install_passes_kubernetes_validate_strict(
    name: str, version: str, tmp_path: Path
) -> None:
    """The rendering passes ``kubernetes-validate --strict`` and every object has a schema:
    the tool only warns about kinds it has no schema for, which would leave them
    unchecked, so a warning fails the test too."""
    rendering = tmp_path / f"{name}.yaml"
    rendering.write_text(yaml.safe_dump_all(resources_of(name), sort_keys=False))
    done = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, str(rendering)],
        capture_output=True, text=True, check=False,
    )
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 0, output
    problems = [line for line in output.splitlines() if not line.startswith("INFO")]
    assert not problems, "\n".join(problems)


def test_monitoring_component_is_kept_out_of_the_validated_installs() -> None:
    """The PodMonitor is a prometheus-operator kind with no offline schema (the tool would
    only warn), so the monitoring component is opt-in and in no install; instead its
    selector must pick every pod with a metrics port, by that port's name."""
    monitoring = render(K8S / "components" / "monitoring")
    (monitor,) = [r for r in monitoring if r["kind"] == "PodMonitor"]
    with pytest.raises(kv_utils.SchemaNotFoundError):
        kv_utils.validate(monitor, OLDEST_KUBERNETES, strict=True)
    for name in INSTALLS:
        assert not any(r["kind"] == "PodMonitor" for r in resources_of(name)), name
    selector = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    for name in INSTALLS:
        for workload, container in each_container(name):
            if container_port(container, "metrics") is None:
                continue
            labels = workload["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), where(name, workload, container)
            assert endpoint["port"] == "metrics"


# --- the default install's contents ------------------------------------------------------


def test_default_install_runs_the_four_services() -> None:
    """The default install has a Deployment for each service; the controller runs alone
    and is replaced, never rolled (one writer of the store)."""
    resources = resources_of("default")
    for role in ("controller", "trainer", "reward", "latency"):
        deployment = find(resources, "Deployment", f"mnas-{role}")
        assert deployment is not None, role
        (container,) = pod_spec(deployment)["containers"]
        assert container["image"] == f"mnas/{role}:0.1.0"
    controller = find(resources, "Deployment", "mnas-controller")
    assert controller is not None
    assert controller["spec"]["replicas"] == 1
    assert controller["spec"]["strategy"] == {"type": "Recreate"}
    claim = find(resources, "PersistentVolumeClaim", "mnas-controller-store")
    assert claim is not None, "the SQLite store's volume claim"
    (main,) = pod_spec(controller)["containers"]
    assert flag(main, "store") == "/var/lib/mnas/mnas.db"


def test_services_follow_the_naming_convention() -> None:
    """Services mnas-<role> with ports grpc 50051 and metrics 9090; trainer and latency are
    headless (the controller resolves every pod with dns:///), the others ClusterIP."""
    resources = resources_of("default")
    for role, headless in (("controller", False), ("trainer", True), ("latency", True),
                           ("reward", False)):
        service = find(resources, "Service", f"mnas-{role}")
        assert service is not None, role
        assert (service["spec"].get("clusterIP") == "None") is headless, role
        ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
        assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}, role


def _is_structural(schema: Resource, path: str) -> list[str]:
    """Where ``schema`` breaks the structural rule: every node states its type."""
    problems = []
    typed = "type" in schema or schema.get("x-kubernetes-int-or-string") is True
    if not typed and schema.get("x-kubernetes-preserve-unknown-fields") is not True:
        problems.append(f"{path}: no type")
    for key, child in schema.get("properties", {}).items():
        problems += _is_structural(child, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        problems += _is_structural(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        problems += _is_structural(schema["additionalProperties"], f"{path}{{}}")
    return problems


def test_default_install_defines_the_mnassearch_resource() -> None:
    """The CRD mnassearches.mnas.dev is in the default install, each served version with a
    status subresource and a structural schema whose spec and status are spelled out."""
    crd = find(resources_of("default"), "CustomResourceDefinition", "mnassearches.mnas.dev")
    assert crd is not None
    assert crd["spec"]["group"] == "mnas.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    for version in crd["spec"]["versions"]:
        assert version["subresources"].get("status") == {}, version["name"]
        schema = version["schema"]["openAPIV3Schema"]
        assert schema["type"] == "object"
        assert not _is_structural(schema, version["name"])
        for part in ("spec", "status"):
            node = schema["properties"][part]
            assert node["type"] == "object" and node.get("properties"), f"{part} spelled out"
            assert not node.get("x-kubernetes-preserve-unknown-fields"), part


# --- every workload: probes, grace, resources, security ----------------------------------


@every_install
def test_every_service_container_has_grpc_probes(name: str) -> None:
    """Every Deployment and DaemonSet container serves gRPC on the port named grpc
    (50051), metrics on the port named metrics (9090), and its readiness and liveness
    probes are native gRPC probes on that port, as are the trainer's and controller's
    startup probes (both load before they serve)."""
    for workload, container in each_container(name):
        if workload["kind"] == "StatefulSet" or container.get("command"):
            continue  # PostgreSQL and helpers (adb, the wait for the database)
        at = where(name, workload, container)
        assert serves_grpc(container), at
        assert container_port(container, "grpc") == GRPC_PORT, at
        assert container_port(container, "metrics") == METRICS_PORT, at
        assert flag(container, "port") == str(GRPC_PORT), at
        assert flag(container, "metrics-port") == str(METRICS_PORT), at
        assert flag(container, "host") == "0.0.0.0", at
        probes = ["readinessProbe", "livenessProbe"]
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        if component in ("trainer", "controller"):
            probes.append("startupProbe")
        for probe in probes:
            assert probe in container, f"{at}: no {probe}"
            assert container[probe].get("grpc", {}).get("port") == GRPC_PORT, f"{at}: {probe}"


def test_postgres_is_probed_with_pg_isready() -> None:
    """PostgreSQL has startup, readiness and liveness probes that run pg_isready."""
    statefulset = find(resources_of("postgres"), "StatefulSet", "mnas-postgres")
    assert statefulset is not None
    (container,) = pod_spec(statefulset)["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"][0] == "pg_isready", probe


@every_install
def test_termination_grace_outlasts_the_services_own(name: str) -> None:
    """The pod's termination grace period is longer than the service's --grace (which is
    longer than a trainer's --drain), so the service stops itself before it is killed."""
    for workload, container in each_container(name):
        grace = flag(container, "grace")
        if grace is None:
            continue
        at = where(name, workload, container)
        assert pod_spec(workload)["terminationGracePeriodSeconds"] > float(grace), at
        drain = flag(container, "drain")
        if drain is not None:
            assert float(drain) < float(grace), at


@every_install
def test_every_container_has_requests_and_limits(name: str) -> None:
    """Every container, init containers included, requests and limits CPU and memory."""
    for workload, container in each_container(name):
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            for what in ("cpu", "memory"):
                assert what in resources.get(kind, {}), (
                    f"{where(name, workload, container)}: no {kind}.{what}"
                )


def _security(workload: Resource, container: Resource) -> dict[str, Any]:
    """The container's effective security settings (the pod's where it sets none)."""
    pod = pod_spec(workload).get("securityContext", {})
    own = container.get("securityContext", {})
    return {
        "runAsNonRoot": own.get("runAsNonRoot", pod.get("runAsNonRoot")),
        "readOnlyRootFilesystem": own.get("readOnlyRootFilesystem"),
        "allowPrivilegeEscalation": own.get("allowPrivilegeEscalation"),
        "drop": own.get("capabilities", {}).get("drop"),
        "add": own.get("capabilities", {}).get("add"),
        "seccomp": own.get("seccompProfile", pod.get("seccompProfile")),
        "privileged": own.get("privileged", False),
    }


@every_install
def test_every_container_is_locked_down(name: str) -> None:
    """Every container, init containers included, runs as non-root on a read-only root
    filesystem, cannot escalate privileges, drops all capabilities and adds none, under
    the runtime's seccomp profile. The one exception, the phones install's adb container,
    is privileged (USB) and root, and otherwise as tight as the API allows."""
    for workload, container in each_container(name):
        at = where(name, workload, container)
        security = _security(workload, container)
        assert security["readOnlyRootFilesystem"] is True, at
        assert security["drop"] == ["ALL"], at
        assert not security["add"], at
        assert security["seccomp"] == {"type": "RuntimeDefault"}, at
        if (name, ref(workload), container["name"]) in PRIVILEGED:
            assert security["privileged"] is True, at
            continue
        assert security["privileged"] is False, at
        assert security["runAsNonRoot"] is True, at
        assert security["allowPrivilegeEscalation"] is False, at


def test_privileged_adb_container_gets_usb_and_nothing_else_from_the_host() -> None:
    """The privileged adb container mounts /dev/bus/usb from the host and no other host
    path; the latency container beside it is unprivileged and mounts the host only for
    benchmark_model, read-only."""
    daemonset = find(resources_of("phones"), "DaemonSet", "mnas-latency")
    assert daemonset is not None
    spec = pod_spec(daemonset)
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    for container in all_containers(daemonset):
        mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
        from_host = {host_paths[n] for n in mounts if n in host_paths}
        if container["name"] == "adb":
            assert from_host == {"/dev/bus/usb"}
        else:
            assert from_host <= {"/var/lib/mnas/phones"}
            assert all(mounts[n].get("readOnly") for n in mounts if n in host_paths)
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")


@every_install
def test_only_the_documented_containers_are_privileged(name: str) -> None:
    """No container outside the documented list is privileged, and no pod shares the
    host's network, PID or IPC namespaces."""
    for workload, container in each_container(name):
        if container.get("securityContext", {}).get("privileged"):
            assert (name, ref(workload), container["name"]) in PRIVILEGED
        spec = pod_spec(workload)
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), ref(workload)


@every_install
def test_scratch_space_and_volumes_add_up(name: str) -> None:
    """Every service container (read-only root) has an emptyDir at /tmp for scratch, every
    mount names a volume of its pod, and every volume is mounted."""
    for workload in workloads(resources_of(name)):
        spec = pod_spec(workload)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        mounted = set()
        for container in all_containers(workload):
            at = where(name, workload, container)
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            for volume in mounts.values():
                assert volume in volumes or volume in claims, f"{at}: no volume {volume}"
            mounted |= set(mounts.values())
            if serves_grpc(container):
                assert "/tmp" in mounts, f"{at}: no /tmp"
                assert "emptyDir" in volumes[mounts["/tmp"]], at
        assert set(volumes) <= mounted, f"{name}: {ref(workload)} mounts none of {volumes}"


@every_install
def test_pods_need_no_service_account_token(name: str) -> None:
    """Only the operator talks to the Kubernetes API; every other pod runs without a
    service account token and without Service environment variables."""
    for workload in workloads(resources_of(name)):
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        if component in API_CLIENTS:
            continue
        spec = pod_spec(workload)
        assert spec.get("automountServiceAccountToken") is False, ref(workload)
        assert spec.get("enableServiceLinks") is False, ref(workload)


@every_install
def test_images_are_pinned(name: str) -> None:
    """Every image names a version tag (no ``latest``, no bare name)."""
    for workload, container in each_container(name):
        image = container["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest", where(name, workload, container)


@every_install
def test_env_references_are_defined_before_use(name: str) -> None:
    """Every ``$(VAR)`` in a container's command, arguments or environment names a variable
    the container defines earlier (the kubelet leaves unknown ones as they are)."""
    for workload, container in each_container(name):
        defined: set[str] = set()
        for variable in container.get("env", []):
            for used in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", variable.get("value", "")):
                assert used in defined, f"{where(name, workload, container)}: {used}"
            defined.add(variable["name"])
        for word in [*container.get("command", []), *container.get("args", [])]:
            for used in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", word):
                assert used in defined, f"{where(name, workload, container)}: {used}"


@every_install
def test_service_addresses_in_flags_exist(name: str) -> None:
    """Every ``NAME:PORT`` a container's flags or environment name (``dns:///`` included)
    is a Service of the install with that port: the controller's workers, the operator's
    controller, the store's database."""
    resources = resources_of(name)
    services = {
        r["metadata"]["name"]: {p["port"] for p in r["spec"]["ports"]}
        for r in resources if r["kind"] == "Service"
    }
    for workload, container in each_container(name):
        words = [*container.get("args", []), *container.get("command", [])]
        words += [v.get("value", "") for v in container.get("env", [])]
        for word in words:
            for host, port in re.findall(r"(mnas-[a-z0-9-]+):(\d+)", word):
                at = where(name, workload, container)
                assert host in services, f"{at}: no Service {host}"
                assert int(port) in services[host], f"{at}: Service {host} has no port {port}"


# --- labels and scraping -----------------------------------------------------------------


@every_install
def test_one_label_scheme(name: str) -> None:
    """Every object is labelled app.kubernetes.io/name and part-of mnas; workloads, their
    pods and Services carry their component, selectors use name and component only, and
    each Service selects exactly one workload's pods."""
    resources = resources_of(name)
    for resource in resources:
        labels = resource["metadata"].get("labels", {})
        if resource["kind"] == "CustomResourceDefinition":
            continue  # the CRD is the API's, not one of ours to select
        assert labels.get("app.kubernetes.io/name") == "mnas", f"{name}: {ref(resource)}"
        assert labels.get("app.kubernetes.io/part-of") == "mnas", f"{name}: {ref(resource)}"
    pod_labels = {}
    for workload in workloads(resources):
        labels = workload["metadata"]["labels"]
        template = workload["spec"]["template"]["metadata"]["labels"]
        selector = workload["spec"]["selector"]["matchLabels"]
        assert set(selector) == set(SELECTOR_LABELS), ref(workload)
        assert selector.items() <= template.items(), ref(workload)
        assert template["app.kubernetes.io/component"] == labels["app.kubernetes.io/component"]
        assert template.get("app.kubernetes.io/part-of") == "mnas", ref(workload)
        pod_labels[ref(workload)] = template
    for service in (r for r in resources if r["kind"] == "Service"):
        selector = service["spec"]["selector"]
        assert set(selector) == set(SELECTOR_LABELS), ref(service)
        chosen = [w for w, labels in pod_labels.items() if selector.items() <= labels.items()]
        assert len(chosen) == 1, f"{name}: {ref(service)} selects {chosen}"


@every_install
def test_prometheus_scrape_annotations_name_the_metrics_port(name: str) -> None:
    """Every pod with a metrics port asks to be scraped on that port at /metrics."""
    for workload in workloads(resources_of(name)):
        ports = [container_port(c, "metrics") for c in all_containers(workload)]
        ports = [p for p in ports if p is not None]
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if not ports:
            assert "prometheus.io/scrape" not in annotations, ref(workload)
            continue
        assert annotations.get("prometheus.io/scrape") == "true", ref(workload)
        assert annotations.get("prometheus.io/port") == str(ports[0]), ref(workload)
        assert annotations.get("prometheus.io/path") == "/metrics", ref(workload)


# --- network policies --------------------------------------------------------------------


class Pod:
    """A pod as NetworkPolicies see it: namespace, labels and its named ports."""

    def __init__(self, namespace: str, labels: dict[str, str], ports: dict[str, int]) -> None:
        self.namespace, self.labels, self.ports = namespace, labels, ports


def _matches(selector: Resource, labels: dict[str, str]) -> bool:
    assert "matchExpressions" not in selector, "the evaluator reads matchLabels only"
    return dict(selector.get("matchLabels", {})).items() <= labels.items()


def _peer_matches(peer: Resource, source: Pod) -> bool:
    assert "ipBlock" not in peer, "the evaluator knows no ipBlock"
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": source.namespace}
        if not _matches(peer["namespaceSelector"], namespace_labels):
            return False
    elif source.namespace != NAMESPACE:
        return False
    return _matches(peer.get("podSelector", {}), source.labels)


def allowed(policies: list[Resource], source: Pod, target: Pod, port: str) -> bool:
    """Whether ``source`` may open a connection to ``target``'s port named ``port``."""
    number = target.ports[port]
    selecting = [
        p for p in policies
        if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and _matches(p["spec"]["podSelector"], target.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            if peers and not any(_peer_matches(peer, source) for peer in peers):
                continue
            rule_ports = rule.get("ports")
            if not rule_ports or any(p["port"] in (port, number) for p in rule_ports):
                return True
    return False


def _pods(resources: tuple[Resource, ...]) -> dict[str, Pod]:
    pods = {}
    for workload in workloads(resources):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        ports = {
            p["name"]: int(p["containerPort"])
            for c in all_containers(workload) for p in c.get("ports", []) if "name" in p
        }
        pods[labels["app.kubernetes.io/component"]] = Pod(NAMESPACE, labels, ports)
    return pods


@every_install
def test_network_policies_let_only_the_controller_reach_the_workers(name: str) -> None:
    """Only the controller reaches the trainer, latency and reward gRPC ports and the
    database; the controller's gRPC port is the one reachable from outside the namespace;
    Prometheus (in its own namespace) scrapes every metrics port and nothing else."""
    resources = resources_of(name)
    policies = [r for r in resources if r["kind"] == "NetworkPolicy"]
    pods = _pods(resources)
    outsider = Pod("default", {"app": "curious"}, {})
    prometheus = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"}, {})
    controller = pods["controller"]
    for component, pod in pods.items():
        for port in pod.ports:
            open_to_all = component == "controller" and port == "grpc"
            scraped = allowed(policies, prometheus, pod, port)
            assert scraped is (port == "metrics" or open_to_all), f"{name}: {component}:{port}"
            assert allowed(policies, outsider, pod, port) is open_to_all, f"{component}:{port}"
            for other_name, other in pods.items():
                if other_name in ("controller", component) or open_to_all:
                    continue
                assert not allowed(policies, other, pod, port), f"{other_name} -> {component}"
    for component in ("trainer", "latency", "reward", "postgres"):
        if component in pods:
            port = "postgres" if component == "postgres" else "grpc"
            assert allowed(policies, controller, pods[component], port), component


# --- what each install adds --------------------------------------------------------------


def test_postgres_install_keeps_the_store_in_postgresql() -> None:
    """The postgres install runs PostgreSQL as a StatefulSet with a volume claim and the
    password from the Secret mnas-postgres; the controller has no --store and reads the
    URL built from that Secret from MNAS_STORE_URL; the SQLite volume claim is gone."""
    resources = resources_of("postgres")
    statefulset = find(resources, "StatefulSet", "mnas-postgres")
    assert statefulset is not None
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    (database,) = pod_spec(statefulset)["containers"]
    env = {v["name"]: v for v in database["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mnas-postgres"
    assert find(resources, "PersistentVolumeClaim", "mnas-controller-store") is None
    controller = find(resources, "Deployment", "mnas-controller")
    assert controller is not None
    (main,) = pod_spec(controller)["containers"]
    assert flag(main, "store") is None  # the password stays off the command line
    controller_env = {v["name"]: v for v in main["env"]}
    secret = controller_env["MNAS_POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "mnas-postgres", "key": "password"}
    assert "@mnas-postgres:5432/" in controller_env["MNAS_STORE_URL"]["value"]


def test_gpu_install_gives_each_trainer_one_gpu() -> None:
    """The gpu install's trainer asks for one nvidia.com/gpu, runs on GPU nodes (selector
    and toleration), trains on CUDA, one trial at a time; nothing else changes."""
    resources = resources_of("gpu")
    trainer = find(resources, "Deployment", "mnas-trainer")
    assert trainer is not None
    spec = pod_spec(trainer)
    (container,) = spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
        spec["tolerations"]
    )
    assert flag(container, "device") == "cuda"
    assert flag(container, "max-concurrent") == "1"
    standalone = {ref(r): r for r in resources_of("standalone")}
    changed = [ref(r) for r in resources if standalone.get(ref(r)) != r]
    assert changed == ["Deployment/mnas-trainer"]


def test_phones_install_runs_latency_on_phone_hosts() -> None:
    """The phones install replaces the latency Deployment with a DaemonSet on nodes
    labelled mnas.dev/phone-host: "true", whose latency container reads the farm file
    from a ConfigMap, and whose adb server (a native sidecar, so it listens before the
    service starts) listens on the port the farm file names."""
    resources = resources_of("phones")
    assert find(resources, "Deployment", "mnas-latency") is None
    daemonset = find(resources, "DaemonSet", "mnas-latency")
    assert daemonset is not None
    spec = pod_spec(daemonset)
    assert spec["nodeSelector"] == {"mnas.dev/phone-host": "true"}
    (adb,) = spec["initContainers"]
    assert is_sidecar(adb) and adb["command"][0] == "adb"
    assert "tcpSocket" in adb["startupProbe"]
    (latency,) = spec["containers"]
    farm_path = flag(latency, "phones")
    assert farm_path is not None
    volumes = {v["name"]: v for v in spec["volumes"]}
    (mount,) = [m for m in latency["volumeMounts"] if farm_path.startswith(m["mountPath"] + "/")]
    config_map = find(resources, "ConfigMap", volumes[mount["name"]]["configMap"]["name"])
    assert config_map is not None
    farm = yaml.safe_load(config_map["data"][Path(farm_path).name])
    adb_words = adb["command"]
    assert farm["adb"]["host"] == "127.0.0.1"
    assert str(farm["adb"]["port"]) == adb_words[adb_words.index("-P") + 1]
    assert container_port(adb, "adb") == farm["adb"]["port"]


@every_install
def test_namespace_enforces_pod_security(name: str) -> None:
    """The namespace enforces the restricted Pod Security profile, except in the phones
    install (its adb container is privileged), which still warns and audits against it."""
    namespace = find(resources_of(name), "Namespace", NAMESPACE)
    assert namespace is not None
    labels = namespace["metadata"]["labels"]
    enforce = "privileged" if name == "phones" else "restricted"
    assert labels["pod-security.kubernetes.io/enforce"] == enforce
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"
