"""Each container's command in the manifests, started here: manifests and code cannot drift.

No cluster exists. For every Deployment and DaemonSet container that serves gRPC, in every
install, the test takes the command and arguments as the kubelet would run them and starts
them locally with this checkout's Python, from the repository root:

- a container without ``command`` runs its image's entrypoint, which for ``mnas/ROLE``
  images is ``python -m services.ROLE`` (the Dockerfile's rule);
- ``$(VAR)`` is expanded from the container's environment, as the kubelet does; Secrets
  get stand-in values, and the store's PostgreSQL URL points at the test's PostgreSQL
  (127.0.0.1:5432, database ``test``, trust auth) in a fresh schema;
- a Service name (bare, or with its namespace, ``.svc`` and the cluster domain) becomes
  127.0.0.1, each port a container declares becomes a free port (in flags and
  arguments, and where a mounted ConfigMap file names it), and each mount path becomes a
  temporary directory holding what the volume would (a ConfigMap's files, nothing for an
  emptyDir or a fresh claim, empty placeholders for the files a ConfigMap names on a
  host path);
- a pod that keeps a service account token gets, in its place, a kubeconfig
  (``KUBECONFIG``) naming an API server on loopback where nothing listens;
- native sidecars (init containers with ``restartPolicy: Always``) start first and are
  waited for by their startup probe, as the kubelet does: the probe's ``exec`` command
  runs here like the container's (``python`` is this checkout's); it must fail before the
  sidecar starts and pass once it runs, as must the liveness probe then. Other init
  containers (the postgres install's wait for the database, from the upstream
  ``postgres`` image) and the PostgreSQL StatefulSet are not ours and are not started.

The service must then answer the gRPC health check (service "") with SERVING on the port
its probes name, serve ``/metrics`` on the port its scrape annotation names, and exit 0
on SIGTERM within the pod's termination grace period. A command shared by several
installs is started once.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mnas.local import Process, free_port, wait_serving
from tests.common.certs import make_pki
from tests.deploy import (
    REPO,
    SERVICE_REF,
    RenderError,
    Resource,
    all_containers,
    find,
    installs,
    is_sidecar,
    namespace_of,
    pod_spec,
    ref,
    render,
    serves_grpc,
)

POSTGRES_URL = os.environ.get(
    "MNAS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
# Stand-ins for the Secrets an operator of the cluster creates (docs/kubernetes.md): for
# the secure install, a certificate made for the test by its own CA, and tokens.
_PKI = make_pki()
_ADMIN_TOKEN = secrets.token_hex(16)
SECRETS = {
    ("mnas-postgres", "password"): "unused-under-trust-auth",
    ("mnas-tls", "tls.crt"): _PKI.server_cert.decode(),  # for server and client auth
    ("mnas-tls", "tls.key"): _PKI.server_key.decode(),
    ("mnas-tls", "ca.crt"): _PKI.ca.decode(),
    ("mnas-auth-tokens", "tokens.yaml"): f"{_ADMIN_TOKEN}: {{user: ops, admin: true}}\n",
    ("mnas-operator-token", "token"): _ADMIN_TOKEN,
}
FIELDS = {"metadata.name": "pod-0", "spec.nodeName": "node-0"}
STARTUP_TIMEOUT = 120.0
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
_DB_URL = re.compile(r"postgres(?:ql)?(?:\+\w+)?://[^\s\"']+")


@dataclass(frozen=True)
class Launch:
    """One distinct container command, the first install it appears in, and the rest."""

    install: str
    resources: tuple[Resource, ...]
    workload: Resource
    container: Resource
    also_in: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.install}:{ref(self.workload)}/{self.container['name']}"


def _volumes_key(launch_resources: tuple[Resource, ...], workload: Resource) -> list[Any]:
    """The pod's volumes with each ConfigMap's data, which the command reads."""
    key = []
    for volume in pod_spec(workload).get("volumes", []):
        data = None
        if "configMap" in volume:
            config_map = find(launch_resources, "ConfigMap", volume["configMap"]["name"])
            data = config_map and config_map.get("data")
        key.append([volume, data])
    return key


def _launches() -> list[Launch]:
    by_key: dict[str, Launch] = {}
    for name, path in installs().items():
        resources = render(path)
        for workload in resources:
            if workload["kind"] not in ("Deployment", "DaemonSet"):
                continue
            for container in pod_spec(workload)["containers"]:
                if not serves_grpc(container):
                    continue
                sidecars = [c for c in all_containers(workload) if is_sidecar(c)]
                key = json.dumps(
                    [
                        container["image"],
                        container.get("command"),
                        container.get("args"),
                        container.get("env"),
                        container.get("volumeMounts"),
                        sidecars,
                        _volumes_key(resources, workload),
                    ],
                    sort_keys=True,
                )
                if key in by_key:
                    first = by_key[key]
                    by_key[key] = Launch(
                        first.install,
                        first.resources,
                        first.workload,
                        first.container,
                        (*first.also_in, name),
                    )
                else:
                    by_key[key] = Launch(name, resources, workload, container)
    return list(by_key.values())


def _launch_params() -> list[Any]:
    try:
        launches = _launches()
    except RenderError as err:
        return [pytest.param(str(err), id="render-failed")]
    return [pytest.param(launch, id=launch.id) for launch in launches]


# --- turning a container into a local command ---------------------------------------------


@dataclass
class Pod:
    """What the containers of one pod share here: free ports for the declared ones,
    127.0.0.1 for Service names, directories for mount paths."""

    launch: Launch
    tmp: Path
    ports: dict[int, int]
    services: dict[tuple[str | None, str], dict[int, int]]
    postgres_services: set[tuple[str | None, str]]
    postgres_url: str | None = None

    @property
    def namespace(self) -> str | None:
        return namespace_of(self.launch.workload)

    @classmethod
    def of(cls, launch: Launch, tmp: Path) -> Pod:
        declared = {
            int(port["containerPort"])
            for container in all_containers(launch.workload)
            for port in container.get("ports", [])
        }
        services: dict[tuple[str | None, str], dict[int, int]] = {}
        postgres = set()
        for service in launch.resources:
            if service["kind"] != "Service":
                continue
            ports = {int(p["port"]): free_port() for p in service["spec"]["ports"]}
            services[(namespace_of(service), service["metadata"]["name"])] = ports
            if any(p.get("name") == "postgres" for p in service["spec"]["ports"]):
                postgres.add((namespace_of(service), service["metadata"]["name"]))
        return cls(launch, tmp, {port: free_port() for port in declared}, services, postgres)

    def word(self, text: str, mounts: dict[str, Path]) -> str:
        """One argument or value as it is meant here."""
        text = _DB_URL.sub(lambda m: self._database(m.group(0)), text)
        text = SERVICE_REF.sub(self._service, text)
        text = _replace_paths(text, mounts)
        if text in {str(p) for p in self.ports}:
            return str(self.ports[int(text)])
        flag = re.fullmatch(r"(--[\w-]+=)(\d+)", text)
        if flag and int(flag.group(2)) in self.ports:
            return f"{flag.group(1)}{self.ports[int(flag.group(2))]}"
        return text

    def _service(self, match: re.Match[str]) -> str:
        """``NAME[.NAMESPACE...][:PORT]`` of a Service of the install (in the pod's own
        namespace when none is named): loopback, and the free port standing in for PORT.
        Anything else is left as it is."""
        key = (match["namespace"] or self.namespace, match["name"])
        if key not in self.services:
            return match.group(0)
        ports, port = self.services[key], match["port"]
        return "127.0.0.1" + (f":{ports.get(int(port), int(port))}" if port else "")

    def _database(self, url: str) -> str:
        from sqlalchemy import make_url

        parsed = make_url(url)
        if (self.namespace, parsed.host) not in self.postgres_services:
            return url
        if self.postgres_url is None:
            pytest.fail(f"{url}: the test has no PostgreSQL for it", pytrace=False)
        return self.postgres_url

    def environment(self, container: Resource, mounts: dict[str, Path]) -> dict[str, str]:
        env: dict[str, str] = {}
        for variable in container.get("env", []):
            if "value" in variable:
                value = _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), variable["value"])
            else:
                value = self._value_from(variable["valueFrom"])
            env[variable["name"]] = value
        return {name: self.word(value, mounts) for name, value in env.items()}

    def _value_from(self, source: Resource) -> str:
        if "secretKeyRef" in source:
            key = (source["secretKeyRef"]["name"], source["secretKeyRef"]["key"])
            if key not in SECRETS:
                pytest.fail(f"no stand-in for Secret {key}", pytrace=False)
            return SECRETS[key]
        if "configMapKeyRef" in source:
            config_map = find(self.launch.resources, "ConfigMap", source["configMapKeyRef"]["name"])
            assert config_map is not None, source
            return str(config_map["data"][source["configMapKeyRef"]["key"]])
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            return str(self.namespace) if path == "metadata.namespace" else FIELDS[path]
        pytest.fail(f"no stand-in for {source}", pytrace=False)

    def mounts(self, container: Resource) -> dict[str, Path]:
        """Each mount path of ``container`` as a directory holding what its volume would."""
        volumes = {v["name"]: v for v in pod_spec(self.launch.workload).get("volumes", [])}
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts", []):
            assert "subPath" not in mount, "subPath mounts are not mapped"
            directory = self.tmp / f"{container['name']}-{mount['name']}"
            directory.mkdir(exist_ok=True)
            mounts[mount["mountPath"]] = directory
        for mount in container.get("volumeMounts", []):
            self._fill(
                volumes[mount["name"]], mounts[mount["mountPath"]], mounts, volumes, container
            )
        return mounts

    def _fill(
        self,
        volume: Resource,
        directory: Path,
        mounts: dict[str, Path],
        volumes: dict[str, Resource],
        container: Resource,
    ) -> None:
        if "configMap" in volume:
            assert "items" not in volume["configMap"], "ConfigMap items are not mapped"
            config_map = find(self.launch.resources, "ConfigMap", volume["configMap"]["name"])
            assert config_map is not None, volume
            for key, text in config_map.get("data", {}).items():
                text = _replace_paths(text, mounts)
                text = re.sub(
                    r"\bport:\s*(\d+)\b",
                    lambda m: f"port: {self.ports.get(int(m.group(1)), m.group(1))}",
                    text,
                )
                (directory / key).write_text(text)
                self._place_host_files(text, mounts, volumes, container)
        elif "secret" in volume:
            name = volume["secret"]["secretName"]
            for (secret, key), value in SECRETS.items():
                if secret == name:
                    (directory / key).write_text(value)
            provided = any(secret == name for secret, _ in SECRETS)
            assert provided or volume["secret"].get("optional"), f"no stand-in for {name}"
        else:
            kinds = ("emptyDir", "persistentVolumeClaim", "hostPath")
            assert any(kind in volume for kind in kinds), f"unmapped volume {volume}"

    def _place_host_files(
        self, text: str, mounts: dict[str, Path], volumes: dict[str, Resource], container: Resource
    ) -> None:
        """Files a ConfigMap names on a host path are the node's; here, empty placeholders."""
        for mount in container.get("volumeMounts", []):
            if "hostPath" not in volumes[mount["name"]]:
                continue
            directory = mounts[mount["mountPath"]]
            for found in re.findall(rf"{re.escape(str(directory))}/[\w.-]+", text):
                Path(found).touch()

    def command(self, container: Resource) -> tuple[list[str], dict[str, str]]:
        """The argv and environment ``container`` runs with here."""
        words = list(container.get("command") or _entrypoint(container["image"]))
        words += container.get("args", [])
        return self._run_in(container, words)

    def probe_command(self, container: Resource, kind: str) -> tuple[list[str], dict[str, str]]:
        """The argv and environment of ``container``'s exec probe ``kind``, as the kubelet
        runs it inside the container (its environment, ``$(VAR)`` expanded)."""
        probe = container[kind]
        if "exec" not in probe:
            pytest.fail(
                f"{container['name']}: {kind} is not exec; the test runs sidecars' "
                "exec probes only (a network probe reaches the pod's IP, which "
                "loopback here cannot stand for)",
                pytrace=False,
            )
        return self._run_in(container, list(probe["exec"]["command"]))

    def _run_in(self, container: Resource, words: list[str]) -> tuple[list[str], dict[str, str]]:
        mounts = self.mounts(container)
        env = self.environment(container, mounts)
        if pod_spec(self.launch.workload).get("automountServiceAccountToken") is not False:
            env.setdefault("KUBECONFIG", str(self._kubeconfig()))
        expanded = [_VAR.sub(lambda m: env.get(m.group(1), m.group(0)), w) for w in words]
        argv = [self.word(w, mounts) for w in expanded]
        if argv[0] == "python":
            argv[0] = sys.executable
        else:
            program = shutil.which(argv[0])
            if program is None:
                pytest.skip(f"{argv[0]} is not installed here (the image carries it)")
            argv[0] = program
        return argv, env

    def _kubeconfig(self) -> Path:
        """What a pod with a service account token gets (the API's address and a token),
        as a kubeconfig: an API address on loopback where nothing listens."""
        path = self.tmp / "kubeconfig"
        server = f"https://127.0.0.1:{free_port()}"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "pod",
                    "clusters": [
                        {
                            "name": "pod",
                            "cluster": {"server": server, "insecure-skip-tls-verify": True},
                        }
                    ],
                    "users": [{"name": "pod", "user": {"token": "stand-in"}}],
                    "contexts": [
                        {
                            "name": "pod",
                            "context": {
                                "cluster": "pod",
                                "user": "pod",
                                "namespace": str(self.namespace),
                            },
                        }
                    ],
                }
            )
        )
        return path


def _entrypoint(image: str) -> list[str]:
    """The entrypoint of the image: ``python -m services.ROLE`` for ``mnas/ROLE:TAG``."""
    match = re.fullmatch(r"mnas/([a-z]+):[\w.-]+", image)
    assert match, f"{image}: not one of ours, and no command"
    return ["python", "-m", f"services.{match.group(1)}"]


def _replace_paths(text: str, mounts: dict[str, Path]) -> str:
    """Mount paths in ``text`` replaced by their directories, in one pass (a directory
    under /tmp is not replaced again)."""
    if not mounts:
        return text
    paths = sorted(mounts, key=len, reverse=True)
    pattern = "|".join(re.escape(p) for p in paths)
    return re.sub(
        rf"(?<![\w.-])({pattern})(?=/|$|[^\w.-])", lambda m: str(mounts[m.group(1)]), text
    )


# --- running it ---------------------------------------------------------------------------


@contextmanager
def _postgres_schema() -> Iterator[str]:
    """The test's PostgreSQL URL, in a fresh schema dropped afterwards."""
    from sqlalchemy import create_engine, make_url
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.schema import CreateSchema, DropSchema

    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 5})
    schema = "mnas_test_" + secrets.token_hex(8)
    try:
        with engine.begin() as conn:
            conn.execute(CreateSchema(schema))
    except OperationalError as err:
        engine.dispose()
        reason = f"PostgreSQL at {POSTGRES_URL} is not reachable: {err.orig or err}"
        if os.environ.get("MNAS_TEST_SKIP_POSTGRES") == "1":
            pytest.skip(f"{reason} (MNAS_TEST_SKIP_POSTGRES=1)")
        pytest.fail(reason, pytrace=False)
    try:
        url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.begin() as conn:
            conn.execute(DropSchema(schema, cascade=True, if_exists=True))
        engine.dispose()


def _tables(url: str) -> set[str]:
    """The tables in the schema ``url`` names (its ``search_path`` option)."""
    from sqlalchemy import create_engine, inspect, make_url

    options = str(make_url(url).query.get("options", ""))
    schema = options.removeprefix("-csearch_path=")
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names(schema=schema))
    finally:
        engine.dispose()


def _start(name: str, argv: list[str], env: dict[str, str], logs: Path, port: int) -> Process:
    log_path = logs / f"{name}.log"
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            argv,
            cwd=REPO,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Process(name=name, popen=popen, port=port, metrics_port=0, log_path=log_path)


def _probe(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One run of an exec probe: passed when it exits 0."""
    return subprocess.run(
        argv,
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=STARTUP_TIMEOUT,
    )


def _wait_probe_passes(
    process: Process, argv: list[str], env: dict[str, str], timeout: float = STARTUP_TIMEOUT
) -> None:
    """An exec startup probe, as the kubelet runs it: again until it passes, or the
    process dies. Between runs the wait is on the process's exit."""
    deadline = time.monotonic() + timeout
    while True:
        if _probe(argv, env).returncode == 0:
            return
        assert time.monotonic() < deadline, f"{process.name}: its startup probe never passed"
        try:
            status = process.popen.wait(0.1)  # polling a process that is starting up
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"{process.name} exited {status}:\n{process.log_tail()}", pytrace=False)


def _stop(process: Process, grace: float) -> int | None:
    """SIGTERM, then the pod's grace period; the exit status, or None if it was killed."""
    if not process.alive():
        return process.popen.returncode
    process.popen.send_signal(signal.SIGTERM)
    try:
        return process.popen.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return None


@contextmanager
def _pod(launch: Launch, tmp: Path, *, sidecars: bool = True) -> Iterator[tuple[Pod, Process]]:
    """The pod's sidecars (waited for as their startup probes say), then the container."""
    pod = Pod.of(launch, tmp)
    logs = tmp / "logs"
    logs.mkdir()
    grace = float(pod_spec(launch.workload).get("terminationGracePeriodSeconds", 30))
    with ExitStack() as stack:
        if _DB_URL.search(json.dumps(launch.container)):
            pod.postgres_url = stack.enter_context(_postgres_schema())
        started: list[Process] = []
        stack.callback(lambda: [_stop(p, grace) for p in reversed(started)])
        for sidecar in (c for c in all_containers(launch.workload) if is_sidecar(c)):
            if not sidecars:
                continue
            probe_argv, probe_env = pod.probe_command(sidecar, "startupProbe")
            failed = _probe(probe_argv, probe_env)
            assert failed.returncode != 0, f"{sidecar['name']}: the probe passes before it runs"
            argv, env = pod.command(sidecar)
            process = _start(sidecar["name"], argv, env, logs, 0)
            started.append(process)
            _wait_probe_passes(process, probe_argv, probe_env)
            if "livenessProbe" in sidecar:
                alive = _probe(*pod.probe_command(sidecar, "livenessProbe"))
                assert alive.returncode == 0, f"{sidecar['name']}: liveness\n{alive.stderr}"
        argv, env = pod.command(launch.container)
        probe_port = launch.container["readinessProbe"]["grpc"]["port"]
        process = _start(launch.container["name"], argv, env, logs, pod.ports[probe_port])
        started.append(process)
        yield pod, process


def _requires_cuda(container: Resource) -> bool:
    return any(
        w == "--device=cuda" or w.startswith("--device=cuda:") for w in container.get("args", [])
    )


@pytest.mark.parametrize("launch", _launch_params())
def test_container_command_starts_its_service(launch: Launch | str, tmp_path: Path) -> None:
    """The container's command, run here as the kubelet would run it, serves gRPC health
    SERVING on its probes' port and /metrics on its scrape annotation's port, and exits 0
    on SIGTERM within the pod's termination grace period."""
    if isinstance(launch, str):
        pytest.fail(launch, pytrace=False)
    if _requires_cuda(launch.container):
        import torch

        if not torch.cuda.is_available():
            pytest.skip(
                "trains on CUDA and this machine has none (the same command with "
                "--device=cpu is the standalone trainer's, started here)"
            )
    grace = float(pod_spec(launch.workload).get("terminationGracePeriodSeconds", 30))
    annotations = launch.workload["spec"]["template"]["metadata"].get("annotations", {})
    with _pod(launch, tmp_path) as (pod, process):
        probe = launch.container["readinessProbe"]["grpc"]
        wait_serving(process, probe.get("service", ""), STARTUP_TIMEOUT)
        metrics_port = pod.ports[int(annotations["prometheus.io/port"])]
        url = f"http://127.0.0.1:{metrics_port}{annotations['prometheus.io/path']}"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            assert b"# HELP" in response.read()
        if pod.postgres_url is not None:  # the store went where the manifest says
            assert "searches" in _tables(pod.postgres_url), process.log_tail()
        status = _stop(process, grace)
        assert status == 0, f"exit {status} after SIGTERM:\n{process.log_tail()}"


def _phones_launch() -> Launch | None:
    for param in _launch_params():
        launch = param.values[0]
        if isinstance(launch, Launch) and any(
            is_sidecar(c) for c in all_containers(launch.workload)
        ):
            return launch
    return None


def test_latency_with_phones_exits_clearly_while_adb_is_unreachable(tmp_path: Path) -> None:
    """The phones install's latency container lists its phones once, at start: started
    without its adb sidecar it exits non-zero with one line naming the adb server (no
    traceback), so the kubelet starts it again; in the pod, the sidecar's startup probe
    orders the two."""
    launch = _phones_launch()
    if launch is None:
        pytest.fail("no pod with an adb sidecar in any install", pytrace=False)
    with _pod(launch, tmp_path, sidecars=False) as (_, process):
        status = process.popen.wait(STARTUP_TIMEOUT)
        log = process.log_path.read_text()
    assert status == 1, log
    assert "error: --phones: adb server unreachable: list devices at 127.0.0.1:" in log
    assert "Traceback" not in log
