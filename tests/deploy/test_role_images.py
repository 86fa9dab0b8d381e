"""What each role's container image holds, proved without a container runtime.

The ``Dockerfile`` has one target per role, each installing only ``mnas[ROLE]``. The fast
tests read the Dockerfile and check that shape against ``pyproject.toml``. The slow tests
rebuild each image's contents as the final stage does: a fresh virtual environment per role
with only ``mnas[ROLE]``, installed offline from one wheelhouse (the mnas wheel built from
this checkout plus every role's dependencies, resolved once with torch pinned). In it the
role must lack the other roles' frameworks, import nothing outside its extra, and start as
``python -m services.ROLE`` from outside the checkout, answer its gRPC health check, serve
``/metrics``, and exit cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from mnas.local import Process, free_port, wait_serving

_logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
ROLES = ("controller", "trainer", "latency", "reward", "operator")

# Top-level modules of the roles' frameworks and the roles allowed to have each installed.
# Every other role's environment (and image) must lack them; TensorFlow is for tests only.
INSTALLED_ONLY_IN: dict[str, frozenset[str]] = {
    "torch": frozenset({"controller", "trainer"}),
    "sqlalchemy": frozenset({"controller"}),
    "psycopg": frozenset({"controller"}),
    "ai_edge_litert": frozenset({"latency"}),
    "flatbuffers": frozenset({"latency"}),
    "adbutils": frozenset({"latency"}),
    "kubernetes": frozenset({"operator"}),
    "tensorflow": frozenset(),
    "keras": frozenset(),
    "tf_keras": frozenset(),
}

# What each role imports when it starts: its ``__main__`` and what that loads later on
# (the latency exporter and LiteRT, preloaded on a thread; PPO in the learner process).
STARTUP_IMPORTS: dict[str, tuple[str, ...]] = {
    "controller": (
        "services.controller.__main__",
        "services.controller.server",
        "services.controller.ppo",
    ),
    "trainer": (
        "services.trainer.__main__",
        "services.trainer.server",
        "services.trainer.training",
        "services.trainer.isolation",
    ),
    "latency": (
        "services.latency.__main__",
        "services.latency.server",
        "services.latency.export",
        "ai_edge_litert.interpreter",
    ),
    "reward": ("services.reward.__main__", "services.reward.server"),
    "operator": ("services.operator.__main__",),
}

# Packages a role must not import even where they are installed: the controller never
# reads data sets (they live with the trainers); no role loads TensorFlow.
NEVER_IMPORTED = ("tensorflow", "keras", "tf_keras")
NOT_IMPORTED_BY: dict[str, tuple[str, ...]] = {
    "controller": ("services.trainer",),
    "trainer": (),
    "latency": ("torch",),
    "reward": ("torch", "sqlalchemy"),
    "operator": ("torch",),
}

# Debian packages a role's image installs beside its extra.
DEBIAN_PACKAGES: dict[str, frozenset[str]] = {
    "trainer": frozenset({"dataset-fashion-mnist"}),
    "latency": frozenset({"adb"}),
}

START_TIMEOUT = 180.0
EXIT_TIMEOUT = 60.0


def _pyproject() -> dict[str, object]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _extras() -> dict[str, list[str]]:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    extras = project["optional-dependencies"]
    assert isinstance(extras, dict)
    return extras


def _torch_pin() -> str:
    """The one torch release every role that has torch installs (``torch==X``)."""
    pins = {
        re.sub(r"\s", "", requirement.split(";")[0])
        for requirement in _extras()["trainer"] + _extras()["controller"]
        if re.match(r"torch\b", requirement)
    }
    assert len(pins) == 1 and next(iter(pins)).startswith("torch=="), pins
    return pins.pop()


# -- the Dockerfile's shape ---------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]]

    def all(self, instruction: str) -> list[str]:
        return [rest for name, rest in self.instructions if name == instruction]


def _read_dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    """The global ARG defaults and the stages by name, continuation lines joined."""
    text = (REPO / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in joined.splitlines():
        if not line.strip():
            continue
        instruction, _, rest = line.strip().partition(" ")
        instruction, rest = instruction.upper(), " ".join(rest.split())
        if instruction == "FROM":
            base, _, name = rest.partition(" AS ")
            current = Stage(name=name.strip() or f"stage{len(stages)}", base=base, instructions=[])
            stages[current.name] = current
        elif current is None:
            assert instruction == "ARG", f"{instruction} before the first FROM"
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            current.instructions.append((instruction, rest))
    return args, stages


def _chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """``name``'s stage and the stages it is built FROM, nearest first."""
    chain = [stages[name]]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    return chain


def _image(args: dict[str, str], base: str) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)


def _apt_installs(run: str) -> set[str]:
    packages: set[str] = set()
    for match in re.finditer(r"apt-get install ([^&;|]*)", run):
        packages |= {word for word in match.group(1).split() if not word.startswith("-")}
    return packages


def test_dockerfile_has_a_target_per_role_extra() -> None:
    """The Dockerfile's final stages are exactly the role extras of pyproject.toml, each
    ending in its role's entry point (the other extras are not roles: all of them, the
    developers' tools, and `mnas report`'s plotting)."""
    _, stages = _read_dockerfile()
    with_entrypoint = {name for name, stage in stages.items() if stage.all("ENTRYPOINT")}
    assert with_entrypoint == set(ROLES)
    assert set(_extras()) - {"all", "dev", "report"} == set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_dockerfile_target_installs_only_its_extra_as_non_root(role: str) -> None:
    """A role's target starts from the slim Python image (not the builder), installs only
    ``mnas[ROLE]`` offline without a pip cache plus its Debian packages, has no compilers,
    and runs ``python -m services.ROLE`` as 65532:65532 with gRPC and metrics ports."""
    args, stages = _read_dockerfile()
    chain = _chain(stages, role)
    assert _image(args, chain[-1].base) == "python:3.11-slim-bookworm"
    assert "builder" not in {stage.name for stage in chain}
    runs = [run for stage in chain for run in stage.all("RUN")]
    pip_installs = [run for run in runs if "pip install" in run]
    assert pip_installs, "no pip install"
    for run in pip_installs:
        assert set(re.findall(r"mnas\[([\w,]+)\]", run)) == {role}, run
        assert "--no-index" in run and "--no-cache-dir" in run, run
    apt = set().union(*(_apt_installs(run) for run in runs))
    assert apt == DEBIAN_PACKAGES.get(role, frozenset())
    compilers = re.compile(r"\b(build-essential|gcc|g\+\+|clang|cmake|make)\b")
    assert not [run for run in runs if compilers.search(run)]
    assert stages[role].all("USER")[-1] == "65532:65532"
    assert json.loads(stages[role].all("ENTRYPOINT")[-1]) == ["python", "-m", f"services.{role}"]
    exposed = {port for stage in chain for line in stage.all("EXPOSE") for port in line.split()}
    assert {"50051", "9090"} <= exposed
    env = " ".join(line for stage in chain for line in stage.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env


def test_dockerfile_pins_the_projects_torch_and_no_tensorflow() -> None:
    """The images' torch is the release pyproject.toml pins (a looser pin drags a CUDA
    build), and nothing in the Dockerfile installs TensorFlow."""
    args, stages = _read_dockerfile()
    assert f"torch=={args['TORCH_VERSION']}" == _torch_pin()
    assert args["TORCH_VARIANT"] == "cpu"
    for stage in stages.values():
        for instruction, rest in stage.instructions:
            assert "tensorflow" not in rest.lower(), (stage.name, instruction, rest)


# -- each role's contents, for real ------------------------------------------------------


def _run(command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run ``command``; fail the test with its output when it fails."""
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        pytest.fail(f"{' '.join(command)} exited with {result.returncode}:\n{output}")
    return result.stdout


@dataclass(frozen=True)
class Wheelhouse:
    path: Path
    constraints: Path


@dataclass(frozen=True)
class RoleEnv:
    role: str
    prefix: Path
    python: Path
    workdir: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Wheelhouse:
    """The mnas wheel of this checkout and the wheels of every role's dependencies, as the
    Dockerfile's builder stage makes them (from pip's configured indexes, torch pinned)."""
    root = tmp_path_factory.mktemp("wheelhouse")
    source = root / "src"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for package in ("mnas", "services"):
        shutil.copytree(
            REPO / package,
            source / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
        )
    constraints = root / "constraints.txt"
    constraints.write_text(_torch_pin() + "\n")
    wheels = root / "wheels"
    started = time.perf_counter()
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-build-isolation",
            "--wheel-dir",
            str(wheels),
            "--constraint",
            str(constraints),
            f"{source}[{','.join(ROLES)}]",
        ]
    )
    _logger.info("wheelhouse built in %.1fs", time.perf_counter() - started)
    torches = sorted(p.name for p in wheels.glob("torch-*.whl"))
    version = _torch_pin().removeprefix("torch==")
    assert len(torches) == 1 and re.match(rf"torch-{re.escape(version)}(\+\w+)?-", torches[0])
    return Wheelhouse(path=wheels, constraints=constraints)


def _service_env(home: Path) -> dict[str, str]:
    """The environment of a role's process: none of the test runner's Python settings, a home
    of its own (the images set HOME=/tmp), and no Kubernetes configuration."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV", "KUBE", "CONDA"))
    }
    env.update(HOME=str(home), PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module", params=ROLES)
def role_env(
    request: pytest.FixtureRequest,
    wheelhouse: Wheelhouse,
    tmp_path_factory: pytest.TempPathFactory,
) -> RoleEnv:
    """A fresh virtual environment with only ``mnas[ROLE]``, installed offline from the
    wheelhouse (not editable: the checkout's sources are not importable from it)."""
    role: str = request.param
    root = tmp_path_factory.mktemp(f"role-{role}")
    prefix = root / "venv"
    started = time.perf_counter()
    _run([sys.executable, "-m", "venv", "--without-pip", str(prefix)])
    python = prefix / "bin" / "python"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(wheelhouse.path),
            "--constraint",
            str(wheelhouse.constraints),
            "--no-compile",
            f"mnas[{role}]",
        ]
    )
    _logger.info("%s: environment installed in %.1fs", role, time.perf_counter() - started)
    workdir = root / "work"  # the processes' cwd, outside the checkout
    workdir.mkdir()
    return RoleEnv(
        role=role, prefix=prefix, python=python, workdir=workdir, env=_service_env(workdir)
    )


# Run inside a role's environment: import what the role loads at start, then report the
# modules loaded, any loaded from outside the environment and the standard library, which
# of the frameworks are installed, and the installed torch release.
_PROBE = """
import importlib, importlib.metadata, importlib.util, json, os, sys
for name in sys.argv[1].split(","):
    importlib.import_module(name)
prefixes = (sys.prefix, sys.base_prefix)
files = {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())}
outside = sorted(
    f"{name}: {file}"
    for name, file in files.items()
    if file and os.path.isabs(file) and not file.startswith(prefixes)
)
installed = {name: importlib.util.find_spec(name) is not None for name in sys.argv[2].split(",")}
try:
    torch = importlib.metadata.version("torch")
except importlib.metadata.PackageNotFoundError:
    torch = None
print(json.dumps({"modules": sorted(sys.modules), "outside": outside,
                  "installed": installed, "torch": torch}))
"""


@pytest.fixture(scope="module")
def probe(role_env: RoleEnv) -> dict[str, object]:
    """What :data:`_PROBE` reports in the role's environment."""
    env = role_env
    output = _run(
        [
            str(env.python),
            "-I",  # no PYTHON* variables, no user site, not the cwd on the path
            "-c",
            _PROBE,
            ",".join(STARTUP_IMPORTS[env.role]),
            ",".join(INSTALLED_ONLY_IN),
        ],
        cwd=env.workdir,
        env=env.env,
    )
    result = json.loads(output.strip().splitlines()[-1])
    assert isinstance(result, dict)
    return result


@pytest.mark.slow
def test_role_environment_holds_only_its_extra(role_env: RoleEnv, probe: dict[str, object]) -> None:
    """A role's environment has its own frameworks and none of the other roles' (no
    TensorFlow anywhere), and the torch it has is the pinned CPU release."""
    installed = probe["installed"]
    assert isinstance(installed, dict)
    expected = {name: role_env.role in roles for name, roles in INSTALLED_ONLY_IN.items()}
    assert installed == expected
    if expected["torch"]:
        version = _torch_pin().removeprefix("torch==")
        assert isinstance(probe["torch"], str)
        assert re.fullmatch(rf"{re.escape(version)}(\+cpu)?", probe["torch"]), probe["torch"]


@pytest.mark.slow
def test_role_imports_nothing_outside_its_extra(
    role_env: RoleEnv, probe: dict[str, object]
) -> None:
    """What a role imports at start comes from its own environment (not the checkout) and
    leaves out what the role must not load: TensorFlow for all, the trainer's data sets
    for the controller, torch for latency and reward, SQLAlchemy for reward."""
    assert probe["outside"] == []
    modules = probe["modules"]
    assert isinstance(modules, list)
    for forbidden in (*NEVER_IMPORTED, *NOT_IMPORTED_BY[role_env.role]):
        loaded = [m for m in modules if m == forbidden or m.startswith(forbidden + ".")]
        assert not loaded, f"{role_env.role} imports {forbidden}: {loaded[:5]}"


def _role_args(role: str, workdir: Path) -> list[str]:
    """The least a role needs to start; the workers it names need not be up."""
    if role == "controller":
        return [
            "--store",
            str(workdir / "mnas.db"),
            "--trainer",
            f"127.0.0.1:{free_port()}",
            "--latency",
            f"127.0.0.1:{free_port()}",
            "--reward",
            f"127.0.0.1:{free_port()}",
        ]
    if role == "trainer":
        return ["--threads", "1"]
    if role == "operator":
        # An API server that is not there: the operator serves health all the same.
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "none", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}
                    ],
                    "users": [{"name": "none", "user": {"token": "none"}}],
                    "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
                    "current-context": "none",
                }
            )
        )
        return ["--controller", f"127.0.0.1:{free_port()}", "--kubeconfig", str(kubeconfig)]
    return []


def _wait_metrics(process: Process, timeout: float) -> str:
    """``/metrics`` once it answers (it starts right after the gRPC server)."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{process.metrics_port}/metrics"
    while True:
        assert process.alive(), process.log_tail()
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except OSError:  # URLError among them
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)  # polling a server that is starting up


@pytest.mark.slow
def test_role_serves_health_from_its_own_environment(role_env: RoleEnv) -> None:
    """``python -m services.ROLE`` from the role's environment, outside the checkout,
    answers the gRPC health check with SERVING, serves /metrics, and exits 0 on SIGTERM."""
    port, metrics_port = free_port(), free_port()
    log_path = role_env.workdir / f"{role_env.role}.log"
    command = [
        str(role_env.python),
        "-m",
        f"services.{role_env.role}",
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        "--grace",
        "1",
        *_role_args(role_env.role, role_env.workdir),
    ]
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            command,
            cwd=role_env.workdir,
            env=role_env.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    process = Process(
        name=role_env.role, popen=popen, port=port, metrics_port=metrics_port, log_path=log_path
    )
    try:
        wait_serving(process, "", timeout=START_TIMEOUT)
        _logger.info("%s: serving after %.1fs", role_env.role, time.perf_counter() - started)
        assert "# TYPE" in _wait_metrics(process, timeout=30.0)
        popen.send_signal(signal.SIGTERM)
        returncode = popen.wait(EXIT_TIMEOUT)
        assert returncode == 0, process.log_tail(40)
    finally:
        process.kill()
