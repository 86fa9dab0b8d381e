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

import os
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
    PROBES,
    REPO,
    SERVICE_REF,
    RenderError,
    Resource,
    all_containers,
    container_port,
    find,
    flag,
    installs,
    is_sidecar,
    loopback_ports,
    namespace_of,
    pod_spec,
    probe_port,
    ref,
    render,
    serves_grpc,
    workloads,
)

INSTALLS = installs()
EXPECTED_INSTALLS = {"default", "standalone", "postgres", "gpu", "phones", "secure"}
NEWEST_KUBERNETES = kv_utils.latest_version()
NAMESPACE = "mnas"
PHONES_NAMESPACE = "mnas-phones"
# The namespaces each install lands in: mnas, and for the phones install mnas-phones
# too, which holds its privileged pods and nothing else.
NAMESPACES = {name: {NAMESPACE} for name in EXPECTED_INSTALLS}
NAMESPACES["phones"] = {NAMESPACE, PHONES_NAMESPACE}
SELECTOR_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/component")
GRPC_PORT, METRICS_PORT, HEALTH_PORT = 50051, 9090, 50052

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


def namespace_labels(resources: tuple[Resource, ...], namespace: str) -> dict[str, str]:
    found = find(resources, "Namespace", namespace)
    assert found is not None, f"no Namespace {namespace}"
    return dict(found["metadata"]["labels"])


every_install = pytest.mark.parametrize("name", sorted(INSTALLS))


# --- rendering and schemas ---------------------------------------------------------------


def test_every_install_is_there() -> None:
    """The default install and the four the docs describe exist as kustomizations."""
    assert set(INSTALLS) == EXPECTED_INSTALLS
    assert (K8S / "kustomization.yaml").is_file()


@every_install
def test_install_renders(name: str) -> None:
    """``kubectl kustomize`` renders the install (exit 0) into namespaced objects in its
    namespaces (mnas; for the phones install mnas-phones too), with the Namespace objects
    themselves among them."""
    resources = resources_of(name)
    assert resources
    expected = NAMESPACES[name]
    namespaces = {r["metadata"]["name"] for r in resources if r["kind"] == "Namespace"}
    assert namespaces == expected, name
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    for resource in resources:
        if resource["kind"] not in cluster_scoped:
            assert namespace_of(resource) in expected, f"{name}: {ref(resource)}"


def test_oldest_promised_release_has_schemas() -> None:
    """kubernetes-validate still ships schemas for the oldest release we promise."""
    assert OLDEST_KUBERNETES in kv_utils.all_versions()
    docs = (REPO / "docs" / "kubernetes.md").read_text()
    assert f"Kubernetes {OLDEST_KUBERNETES.rsplit('.', 1)[0]}" in docs


@every_install
@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, NEWEST_KUBERNETES])
def test_install_passes_kubernetes_validate_strict(name: str, version: str, tmp_path: Path) -> None:
    """The rendering passes ``kubernetes-validate --strict`` and every object has a schema:
    the tool only warns about kinds it has no schema for, which would leave them
    unchecked, so a warning fails the test too."""
    rendering = tmp_path / f"{name}.yaml"
    rendering.write_text(yaml.safe_dump_all(resources_of(name), sort_keys=False))
    done = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, str(rendering)],
        capture_output=True,
        text=True,
        check=False,
    )
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 0, output
    problems = [line for line in output.splitlines() if not line.startswith("INFO")]
    assert not problems, "\n".join(problems)


def test_monitoring_component_is_kept_out_of_the_validated_installs() -> None:
    """The PodMonitor and PrometheusRule are prometheus-operator kinds with no offline
    schema (the tool would only warn), so the monitoring component is opt-in and in no
    install; instead the PodMonitor's selector must pick every pod with a metrics port, by
    that port's name."""
    monitoring = render(K8S / "components" / "monitoring")
    (monitor,) = [r for r in monitoring if r["kind"] == "PodMonitor"]
    for resource in monitoring:
        if resource["kind"] in ("PodMonitor", "PrometheusRule"):
            with pytest.raises(kv_utils.SchemaNotFoundError):
                kv_utils.validate(resource, OLDEST_KUBERNETES, strict=True)
    for name in INSTALLS:
        kinds = {r["kind"] for r in resources_of(name)}
        assert not kinds & {"PodMonitor", "PrometheusRule"}, name
        assert not any(
            r["metadata"]["name"] == "mnas-grafana-dashboard" for r in resources_of(name)
        ), name
    selector = monitor["spec"]["selector"]["matchLabels"]
    watched = set(monitor["spec"]["namespaceSelector"]["matchNames"])
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    for name in INSTALLS:
        for workload, container in each_container(name):
            if container_port(container, "metrics") is None:
                continue
            labels = workload["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), where(name, workload, container)
            assert namespace_of(workload) in watched, where(name, workload, container)
            assert endpoint["port"] == "metrics"


MONITORING = K8S / "components" / "monitoring"


def test_monitoring_component_makes_the_dashboard_configmap_for_grafanas_sidecar() -> None:
    """kustomize's configMapGenerator puts the dashboard JSON, unchanged, in a ConfigMap
    labelled grafana_dashboard: "1" (what the Grafana chart's sidecar picks up), under a
    fixed name so a new version replaces the old one."""
    (configmap,) = [r for r in render(MONITORING) if r["kind"] == "ConfigMap"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["name"] == "mnas-grafana-dashboard"
    kv_utils.validate(configmap, OLDEST_KUBERNETES, strict=True)
    dashboard = (MONITORING / "dashboards" / "mnas.json").read_text()
    assert configmap["data"] == {"mnas.json": dashboard}


def test_prometheus_rule_holds_the_rules_of_the_plain_rules_file() -> None:
    """The PrometheusRule (for the operator) and rules/mnas-alerts.yaml (for a plain
    Prometheus) hold the same groups, rule for rule."""
    (rule,) = [r for r in render(MONITORING) if r["kind"] == "PrometheusRule"]
    plain = yaml.safe_load((MONITORING / "rules" / "mnas-alerts.yaml").read_text())
    assert rule["spec"] == plain
    assert rule["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mnas"


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
    for role, headless in (
        ("controller", False),
        ("trainer", True),
        ("latency", True),
        ("reward", False),
    ):
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
    startup probes (both load before they serve). A container serving TLS (the kubelet's
    probes speak plaintext) is probed on its plaintext health-only port, named health
    (50052), instead."""
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
        probed = GRPC_PORT
        if flag(container, "tls-cert") is not None:
            assert flag(container, "health-port") == str(HEALTH_PORT), at
            assert container_port(container, "health") == HEALTH_PORT, at
            probed = HEALTH_PORT
        for probe in probes:
            assert probe in container, f"{at}: no {probe}"
            assert container[probe].get("grpc", {}).get("port") == probed, f"{at}: {probe}"


@every_install
def test_no_network_probe_targets_a_loopback_only_port(name: str) -> None:
    """The kubelet sends tcpSocket, httpGet and gRPC probes from the node to the pod's IP,
    never to its loopback: on a port the container binds on loopback only (adb's server)
    such a probe can never pass, so the container is restarted forever. Those ports are
    probed from inside the container (exec)."""
    for workload, container in each_container(name):
        loopback = loopback_ports(container)
        for kind in PROBES:
            probe = container.get(kind)
            if probe is None:
                continue
            port = probe_port(container, probe)
            at = f"{where(name, workload, container)}: {kind}"
            assert port is not None or "exec" in probe, f"{at}: no port and no command"
            assert port not in loopback, f"{at} targets port {port}, bound on loopback only"
            for handler in ("tcpSocket", "httpGet"):
                assert "host" not in probe.get(handler, {}), f"{at}: the node's, not the pod's"


def test_loopback_ports_are_read_from_the_command() -> None:
    """What the check above relies on: adb's server without -a, and a service under a
    loopback --host, bind loopback only; with -a or on 0.0.0.0 they do not."""
    adb = {"command": ["adb", "-P", "5037", "server", "nodaemon"]}
    assert loopback_ports(adb) == {5037}
    assert loopback_ports({"command": ["adb", "-a", "-P", "5037", "server"]}) == set()
    assert loopback_ports({"command": ["adb", "server", "nodaemon"]}) == {5037}
    local = {"args": ["--host=127.0.0.1", "--port=50051", "--metrics-port=9090"]}
    assert loopback_ports(local) == {50051, 9090}
    assert loopback_ports({"args": ["--host=0.0.0.0", "--port=50051"]}) == set()


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
    is privileged (USB) and root on a read-only root filesystem; it states no capabilities
    and no seccomp profile, which the runtime ignores for a privileged container (it gets
    all capabilities and no seccomp confinement), so stating them would mislead."""
    for workload, container in each_container(name):
        at = where(name, workload, container)
        security = _security(workload, container)
        assert security["readOnlyRootFilesystem"] is True, at
        assert not security["add"], at
        if (name, ref(workload), container["name"]) in PRIVILEGED:
            assert security["privileged"] is True, at
            own = container["securityContext"]
            assert "capabilities" not in own and "seccompProfile" not in own, at
            continue
        assert security["drop"] == ["ALL"], at
        assert security["seccomp"] == {"type": "RuntimeDefault"}, at
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
def test_privileged_pods_have_a_namespace_of_their_own(name: str) -> None:
    """A namespace enforces the privileged Pod Security profile only where a privileged
    container runs, and then holds nothing but that container's workload and what serves
    it (its Service, ConfigMap, NetworkPolicies): every other pod stays in a namespace
    that enforces restricted."""
    resources = resources_of(name)
    privileged_workloads = {
        (namespace_of(w), ref(w))
        for w, c in each_container(name)
        if (name, ref(w), c["name"]) in PRIVILEGED
    }
    for namespace in NAMESPACES[name]:
        enforce = namespace_labels(resources, namespace)["pod-security.kubernetes.io/enforce"]
        here = {ref(w) for w in workloads(resources) if namespace_of(w) == namespace}
        privileged_here = {r for ns, r in privileged_workloads if ns == namespace}
        if privileged_here:
            assert enforce == "privileged", f"{name}: {namespace}"
            assert here == privileged_here, f"{name}: {namespace} holds {here}"
            kinds = {r["kind"] for r in resources if namespace_of(r) == namespace}
            assert kinds <= {"DaemonSet", "Service", "ConfigMap", "NetworkPolicy"}, kinds
        else:
            assert enforce == "restricted", f"{name}: {namespace}"


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
        (namespace_of(r), r["metadata"]["name"]): {p["port"] for p in r["spec"]["ports"]}
        for r in resources
        if r["kind"] == "Service"
    }
    for workload, container in each_container(name):
        words = [*container.get("args", []), *container.get("command", [])]
        words += [v.get("value", "") for v in container.get("env", [])]
        for word in words:
            for found in SERVICE_REF.finditer(word):
                if found["port"] is None:
                    continue
                at = where(name, workload, container)
                key = (found["namespace"] or namespace_of(workload), found["name"])
                assert key in services, f"{at}: no Service {key[1]} in {key[0]}"
                port = int(found["port"])
                assert port in services[key], f"{at}: Service {key} has no port {port}"


def test_service_addresses_resolve_from_the_pods_namespace() -> None:
    """The check above reads a name with a namespace as that namespace's Service, and a
    bare name as one in the pod's own namespace (the DNS search path)."""
    words = "dns:///mnas-latency.mnas-phones.svc.cluster.local:50051 mnas-reward:50051"
    found = [(m["name"], m["namespace"], m["port"]) for m in SERVICE_REF.finditer(words)]
    assert found == [("mnas-latency", "mnas-phones", "50051"), ("mnas-reward", None, "50051")]


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
        pod_labels[(namespace_of(workload), ref(workload))] = template
    for service in (r for r in resources if r["kind"] == "Service"):
        selector = service["spec"]["selector"]
        assert set(selector) == set(SELECTOR_LABELS), ref(service)
        chosen = [
            w
            for (ns, w), labels in pod_labels.items()
            if ns == namespace_of(service) and selector.items() <= labels.items()
        ]
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


def _peer_matches(peer: Resource, source: Pod, policy_namespace: str | None) -> bool:
    """A ``from`` peer: a podSelector alone means pods of the policy's own namespace."""
    assert "ipBlock" not in peer, "the evaluator knows no ipBlock"
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": source.namespace}
        if not _matches(peer["namespaceSelector"], namespace_labels):
            return False
    elif source.namespace != policy_namespace:
        return False
    return _matches(peer.get("podSelector", {}), source.labels)


def allowed(policies: list[Resource], source: Pod, target: Pod, port: str) -> bool:
    """Whether ``source`` may open a connection to ``target``'s port named ``port``: the
    ingress policies of the target's namespace that select it, if any, must let it in."""
    number = target.ports[port]
    selecting = [
        p
        for p in policies
        if namespace_of(p) == target.namespace
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and _matches(p["spec"]["podSelector"], target.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            if peers and not any(_peer_matches(peer, source, target.namespace) for peer in peers):
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
            for c in all_containers(workload)
            for p in c.get("ports", [])
            if "name" in p
        }
        namespace = namespace_of(workload)
        assert namespace is not None, ref(workload)
        pods[labels["app.kubernetes.io/component"]] = Pod(namespace, labels, ports)
    return pods


# Pods of no install: Prometheus in its own namespace, a client in mnas, a pod elsewhere.
PROMETHEUS = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"}, {})
CLIENT = Pod(NAMESPACE, {"app": "notebook"}, {})
OUTSIDER = Pod("default", {"app": "curious"}, {})
WORKERS = {"trainer", "latency", "reward", "postgres"}


def _may_reach(source: str, pods: dict[str, Pod], target: str, port: str) -> bool:
    """docs/kubernetes.md's table: Prometheus scrapes every metrics port; any pod of mnas
    reaches the controller's gRPC port; only the controller reaches the workers' gRPC
    ports and the database; nothing reaches anything else (adb's port among them)."""
    if port == "metrics":
        return source == "prometheus"
    if target == "controller" and port == "grpc":
        return pods[source].namespace == NAMESPACE
    return target in WORKERS and port in ("grpc", "postgres") and source == "controller"


@every_install
def test_network_policies_let_in_only_whom_the_docs_say(name: str) -> None:
    """Every pod of the install, Prometheus, a client pod in mnas and a pod of another
    namespace are tried against every named port of every pod: only the controller
    reaches the workers and the database (in the phones install, across namespaces);
    the controller's gRPC port is reachable from its own namespace and no other;
    Prometheus scrapes every metrics port and nothing else."""
    resources = resources_of(name)
    policies = [r for r in resources if r["kind"] == "NetworkPolicy"]
    pods = _pods(resources)
    sources = {**pods, "prometheus": PROMETHEUS, "client": CLIENT, "outsider": OUTSIDER}
    for target_name, target in pods.items():
        for port in target.ports:
            for source_name, source in sources.items():
                if source_name == target_name:
                    continue
                expected = _may_reach(source_name, sources, target_name, port)
                got = allowed(policies, source, target, port)
                assert got is expected, f"{name}: {source_name} -> {target_name}:{port}"
    assert allowed(policies, pods["controller"], pods["latency"], "grpc"), name


def test_network_policy_evaluator_reads_namespaces() -> None:
    """The evaluator above: a podSelector alone admits pods of the policy's namespace
    only; a namespaceSelector admits the namespaces it names."""
    target = Pod("mnas-phones", {"app": "x"}, {"grpc": 50051})
    same = {"podSelector": {"matchLabels": {"app": "y"}}}
    cross = {**same, "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mnas"}}}
    for peer, namespace, expected in (
        (same, "mnas", False),
        (same, "mnas-phones", True),
        (cross, "mnas", True),
        (cross, "other", False),
    ):
        policy = {
            "metadata": {"name": "p", "namespace": "mnas-phones"},
            "spec": {"podSelector": {}, "ingress": [{"from": [peer]}]},
        }
        source = Pod(namespace, {"app": "y"}, {})
        assert allowed([policy], source, target, "grpc") is expected, (peer, namespace)
    elsewhere = {"metadata": {"name": "p", "namespace": "mnas"}, "spec": {"podSelector": {}}}
    assert allowed([elsewhere], OUTSIDER, target, "grpc"), "a policy of another namespace"


def _docs_yaml_blocks(mentioning: str) -> list[Any]:
    """The YAML blocks of docs/kubernetes.md whose text mentions ``mentioning``."""
    text = (REPO / "docs" / "kubernetes.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    return [yaml.safe_load(block) for block in blocks if mentioning in block]


def test_docs_example_opens_the_controller_to_a_clients_namespace(tmp_path: Path) -> None:
    """The opt-in patch docs/kubernetes.md shows, applied to the default install, lets
    the pods of the namespace it names reach the controller's gRPC port and nothing
    else; pods of other namespaces stay out."""
    (example,) = [
        block
        for block in _docs_yaml_blocks("NetworkPolicy")
        if isinstance(block, dict)
        and any(
            p.get("target", {}).get("name") == "mnas-controller"
            and p.get("target", {}).get("kind") == "NetworkPolicy"
            for p in block.get("patches", [])
        )
    ]
    # kustomize takes no absolute resource paths: the default install, relative to here.
    kustomization = {"resources": [os.path.relpath(K8S, tmp_path)], "patches": example["patches"]}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    done = subprocess.run(
        ["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    resources = tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)
    policies = [r for r in resources if r["kind"] == "NetworkPolicy"]
    pods = _pods(resources)
    (opened,) = re.findall(r"kubernetes.io/metadata.name: ([a-z0-9-]+)", str(example))
    assert opened != NAMESPACE
    client = Pod(opened, {"app": "notebook"}, {})
    assert allowed(policies, client, pods["controller"], "grpc")
    for target_name, target in pods.items():
        for port in target.ports:
            if (target_name, port) != ("controller", "grpc"):
                assert not allowed(policies, client, target, port), f"{target_name}:{port}"
    assert not allowed(policies, OUTSIDER, pods["controller"], "grpc")


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
    labelled mnas.dev/phone-host: "true", in the namespace mnas-phones, whose latency
    container reads the farm file from a ConfigMap, and whose adb server (a native
    sidecar, so it listens before the service starts) listens on the port the farm file
    names and is probed from inside its container, not by an adb client (which would
    start a server of its own when none answers)."""
    resources = resources_of("phones")
    assert find(resources, "Deployment", "mnas-latency") is None
    daemonset = find(resources, "DaemonSet", "mnas-latency")
    assert daemonset is not None
    assert namespace_of(daemonset) == PHONES_NAMESPACE
    spec = pod_spec(daemonset)
    assert spec["nodeSelector"] == {"mnas.dev/phone-host": "true"}
    (adb,) = spec["initContainers"]
    assert is_sidecar(adb) and adb["command"][0] == "adb"
    for kind in ("startupProbe", "livenessProbe"):
        command = adb[kind]["exec"]["command"]
        assert command[0] == "python", kind
        assert not any("adb" in word for word in command), kind
    (latency,) = spec["containers"]
    farm_path = flag(latency, "phones")
    assert farm_path is not None
    volumes = {v["name"]: v for v in spec["volumes"]}
    (mount,) = [m for m in latency["volumeMounts"] if farm_path.startswith(m["mountPath"] + "/")]
    config_map = find(
        resources, "ConfigMap", volumes[mount["name"]]["configMap"]["name"], PHONES_NAMESPACE
    )
    assert config_map is not None
    farm = yaml.safe_load(config_map["data"][Path(farm_path).name])
    adb_words = adb["command"]
    assert farm["adb"]["host"] == "127.0.0.1"
    assert str(farm["adb"]["port"]) == adb_words[adb_words.index("-P") + 1]
    assert container_port(adb, "adb") == farm["adb"]["port"]
    assert farm["adb"]["port"] in loopback_ports(adb)


def test_phones_install_moves_only_latency_out_of_mnas() -> None:
    """Against the standalone install, the phones install takes the latency Deployment,
    Service and NetworkPolicy out of mnas and changes one thing there: the controller
    asks the latency Service of mnas-phones, by its cluster DNS name."""
    resources = resources_of("phones")
    standalone = {(namespace_of(r), ref(r)): r for r in resources_of("standalone")}
    phones = {(namespace_of(r), ref(r)): r for r in resources}
    gone = set(standalone) - set(phones)
    assert gone == {
        (NAMESPACE, f"{kind}/mnas-latency") for kind in ("Deployment", "Service", "NetworkPolicy")
    }
    changed = [key for key in set(standalone) & set(phones) if standalone[key] != phones[key]]
    assert changed == [(NAMESPACE, "Deployment/mnas-controller")]
    controller = phones[(NAMESPACE, "Deployment/mnas-controller")]
    (main,) = pod_spec(controller)["containers"]
    target = flag(main, "latency")
    assert target == f"dns:///mnas-latency.{PHONES_NAMESPACE}.svc.cluster.local:{GRPC_PORT}"
    assert find(resources, "Service", "mnas-latency", PHONES_NAMESPACE) is not None


@every_install
def test_namespaces_enforce_pod_security(name: str) -> None:
    """mnas enforces the restricted Pod Security profile in every install; the phones
    install's mnas-phones (its adb container is privileged) enforces privileged. Both
    warn and audit against restricted."""
    resources = resources_of(name)
    for namespace in NAMESPACES[name]:
        labels = namespace_labels(resources, namespace)
        enforce = "privileged" if namespace == PHONES_NAMESPACE else "restricted"
        assert labels["pod-security.kubernetes.io/enforce"] == enforce, namespace
        assert labels["pod-security.kubernetes.io/warn"] == "restricted", namespace
        assert labels["pod-security.kubernetes.io/audit"] == "restricted", namespace


# --- the secure install ------------------------------------------------------------------

# The Secret key each TLS and token flag's file comes from (docs/kubernetes.md).
SECURE_FILES = {
    "tls-cert": ("mnas-tls", "tls.crt"),
    "tls-key": ("mnas-tls", "tls.key"),
    "tls-client-ca": ("mnas-tls", "ca.crt"),
    "tls-ca": ("mnas-tls", "ca.crt"),
    "tls-client-cert": ("mnas-tls", "tls.crt"),
    "tls-client-key": ("mnas-tls", "tls.key"),
    "auth-tokens": ("mnas-auth-tokens", "tokens.yaml"),
}
# Which flags each component's container takes in the secure install.
SERVER_TLS = ("tls-cert", "tls-key", "tls-client-ca")
CLIENT_TLS = ("tls-ca", "tls-client-cert", "tls-client-key")
SECURE_FLAGS = {
    "controller": (*SERVER_TLS, *CLIENT_TLS, "auth-tokens"),
    "operator": (*SERVER_TLS, *CLIENT_TLS),
    "trainer": SERVER_TLS,
    "latency": SERVER_TLS,
    "reward": SERVER_TLS,
}


def _secret_file(workload: Resource, container: Resource, path: str) -> tuple[str, str] | None:
    """The (Secret, key) a file path of the container reads, through its mounts."""
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        volume = volumes[mount["name"]]
        if path.startswith(prefix) and "secret" in volume:
            return volume["secret"]["secretName"], path.removeprefix(prefix)
    return None


def test_secure_install_serves_mutual_tls_everywhere_and_checks_tokens() -> None:
    """Every service serves TLS and asks for client certificates; the controller and the
    operator call with the same certificate; the controller checks tokens and the
    operator sends an admin's; every file comes from the Secret key the docs name."""
    for workload, container in each_container("secure"):
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        at = where("secure", workload, container)
        for name in SECURE_FLAGS[component]:
            path = flag(container, name)
            assert path is not None, f"{at}: no --{name}"
            assert _secret_file(workload, container, path) == SECURE_FILES[name], f"{at}: {name}"
        for name in set(SECURE_FILES) - set(SECURE_FLAGS[component]):
            assert flag(container, name) is None, f"{at}: --{name} is not its to take"
        token = [e for e in container.get("env", []) if e["name"] == "MNAS_TOKEN"]
        if component == "operator":
            assert token == [
                {
                    "name": "MNAS_TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": "mnas-operator-token", "key": "token"}},
                }
            ], at
        else:
            assert token == [], at


def test_secure_install_is_the_standalone_install_plus_tls_and_tokens() -> None:
    """Nothing but the secure component's changes: the same resources, and each
    container's arguments are the standalone's followed by the TLS and token flags."""
    standalone, secure = resources_of("standalone"), resources_of("secure")
    assert sorted(map(ref, standalone)) == sorted(map(ref, secure))
    for workload in workloads(standalone):
        twin = find(secure, workload["kind"], workload["metadata"]["name"])
        assert twin is not None
        before, after = pod_spec(workload)["containers"][0], pod_spec(twin)["containers"][0]
        assert after["args"][: len(before["args"])] == before["args"], ref(workload)
        added = [
            a.split("=", 1)[0].removeprefix("--") for a in after["args"][len(before["args"]) :]
        ]
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        assert sorted(added) == sorted([*SECURE_FLAGS[component], "health-port"]), ref(workload)
