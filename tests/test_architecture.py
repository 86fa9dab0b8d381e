"""The direction of imports that docs/architecture.md draws, checked on every module.

Each module under ``mnas``, ``services`` and ``benchmarks`` (not the generated
``mnas.v1``) is parsed, not imported, and its imports of the project's own modules and of
``grpc`` collected, those inside functions included; imports under ``if TYPE_CHECKING:``
are for the type checker only and do not count. The rules:

- ``mnas`` (what users import) imports nothing from ``services``, but for the lazy
  imports listed in :data:`MNAS_REACHES_INTO_SERVICES`, each with its reason;
- a service imports from another service only the gRPC-free modules listed in
  :data:`SHARED_ACROSS_SERVICES`; a servicer module (``services.X.server``) is imported
  by its own service's ``__main__`` alone;
- gRPC stays at the edges: in ``services`` only servicers, ``__main__`` modules,
  ``services.common`` and :data:`GRPC_CLIENTS` import ``grpc``;
- no import cycles among modules, lazy imports included (a cycle through one still ties
  the two modules);
- no module imports another's private (``_name``) names.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mnas", "services", "benchmarks")
GENERATED = "mnas.v1"

# (module of mnas, module or package of services): why the first may import the second,
# lazily, inside the function that needs it (the services' extras stay optional).
MNAS_REACHES_INTO_SERVICES: dict[tuple[str, str], str] = {
    ("mnas.cli", "services.latency.export"): "`mnas arch export` writes a .tflite in process",
    ("mnas.cli_latency", "services.latency.conversions"): "`mnas latency measure --local`",
    ("mnas.cli_latency", "services.latency.oracle"): "`mnas latency measure --local` and "
    "`mnas latency calibrate` time on this machine",
    ("mnas.cli_latency", "services.latency.service"): "`mnas latency measure --local`",
    ("mnas.cli_latency", "services.latency.predictor"): "`mnas latency calibrate`",
    ("mnas.cli_report", "services.controller.store"): "`mnas report` reads a store file",
    ("mnas.models", "services.trainer.builder"): "mnas.build_model: a trial's PyTorch module",
    ("mnas.local", "services.trainer.cores"): "`mnas up` shares this machine's cores among "
    "the trainers it starts as a trainer counts them (stdlib only; imported eagerly)",
}
# Of those, the ones imported at the top of their module.
EAGER: frozenset[tuple[str, str]] = frozenset({("mnas.local", "services.trainer.cores")})

# The modules of one service that the others may import (all gRPC-free and light: the
# controller's container installs no other role's extra), and why.
SHARED_ACROSS_SERVICES: dict[str, str] = {
    "services.reward.rewards": "the controller resolves a spec's objective with the paper's "
    "exponents",
    "services.reward.conversions": "the controller reads a spec's Objective message",
    "services.latency.keys": "the controller's store records measurements by their key",
}

# Modules of ``services`` besides servicers, ``__main__`` and ``services.common`` that
# speak gRPC, and why.
GRPC_CLIENTS: dict[str, str] = {
    "services.controller.clients": "the controller's stubs of trainers, latency and reward",
    "services.controller.auth": "the controller's token interceptor",
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    lazy: bool  # inside a function


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = _module_name(path)
            if not _within(name, GENERATED):
                found[name] = path
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.AST, bool]]:
    """Every node below ``node`` and whether it lies inside a function, leaving out the
    bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield other, in_function
                yield from _walk(other, in_function)
            continue
        yield child, in_function
        inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
        yield from _walk(child, inner)


def _resolve(name: str) -> str | None:
    """The project module ``name`` is, or the nearest package above it that is one."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _imports_of(module: str) -> Iterator[tuple[str, int, bool]]:
    """(imported name, line, lazy) for every import in ``module``; a name imported from a
    package counts as its submodule when there is one by that name."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    for node, lazy in _walk(tree, False):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, lazy
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(module).split(".")
                anchor = ".".join(package[: len(package) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield (submodule if submodule in MODULES else base), node.lineno, lazy


def _all_imports() -> list[Import]:
    found = []
    for module in MODULES:
        for name, line, lazy in _imports_of(module):
            if _within(name, "grpc"):
                found.append(Import(module, "grpc", line, lazy))
                continue
            target = _resolve(name)
            if target is not None and target != module:
                found.append(Import(module, target, line, lazy))
    return found


IMPORTS = _all_imports()


def _where(imp: Import) -> str:
    return f"{MODULES[imp.importer].relative_to(ROOT)}:{imp.line}: imports {imp.imported}"


def test_the_walk_sees_the_project() -> None:
    """The rules below look at something: known imports are found, lazy ones as lazy,
    typing-only ones not at all."""
    edges = {(i.importer, i.imported): i for i in IMPORTS}
    assert not edges[("services.controller.spec", "services.reward.conversions")].lazy
    assert edges[("mnas.cli_latency", "services.latency.conversions")].lazy
    assert ("services.reward.server", "grpc") in edges
    assert edges[("mnas.models", "services.trainer.builder")].lazy
    assert ("mnas.models", "mnas.client") not in edges  # typing only
    assert "mnas.v1.common_pb2" not in MODULES  # generated code is not checked


def _listed(imp: Import) -> tuple[str, str] | None:
    """The entry of :data:`MNAS_REACHES_INTO_SERVICES` that allows ``imp``, if any."""
    for importer, imported in MNAS_REACHES_INTO_SERVICES:
        if imp.importer == importer and _within(imp.imported, imported):
            return importer, imported
    return None


def test_mnas_imports_no_services_but_the_listed_lazy_spots() -> None:
    found = [i for i in IMPORTS if _within(i.importer, "mnas") and _within(i.imported, "services")]
    unlisted = [_where(i) for i in found if _listed(i) is None]
    assert not unlisted, "mnas must not depend on services; move the code or list it:\n" + (
        "\n".join(unlisted)
    )
    eager = [_where(i) for i in found if not i.lazy and _listed(i) not in EAGER]
    assert not eager, "mnas imports services lazily, where needed:\n" + "\n".join(eager)
    stale = sorted(set(MNAS_REACHES_INTO_SERVICES) - {_listed(i) for i in found})
    assert not stale, f"listed but not imported (drop them from the list): {stale}"


def _servicer_of(module: str) -> str | None:
    """``services.X`` when ``module`` is service X's servicer module ``services.X.server``
    (``services.common.server`` builds servers for all of them)."""
    parts = module.split(".")
    if len(parts) == 3 and parts[0] == "services" and parts[2] == "server":
        return None if parts[1] == "common" else ".".join(parts[:2])
    return None


def test_only_its_own_main_imports_a_servicer() -> None:
    wrong = [
        _where(i)
        for i in IMPORTS
        if (service := _servicer_of(i.imported)) is not None
        and _within(i.importer, "services")
        and i.importer != f"{service}.__main__"
    ]
    assert not wrong, (
        "a servicer module is its service's RPC layer: import the gRPC-free module that "
        "holds what you need (e.g. services.X.conversions):\n" + "\n".join(wrong)
    )


def _service_of(module: str) -> str | None:
    """``services.X`` for a module of service X (``services.common`` is no service)."""
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "services" or parts[1] == "common":
        return None
    return ".".join(parts[:2])


def test_services_share_only_the_listed_modules() -> None:
    across = [
        i
        for i in IMPORTS
        if (importer := _service_of(i.importer)) is not None
        and (imported := _service_of(i.imported)) is not None
        and importer != imported
    ]
    wrong = [_where(i) for i in across if i.imported not in SHARED_ACROSS_SERVICES]
    assert not wrong, (
        "a service imports another's gRPC-free shared modules only (move what you need "
        "into one, and list it):\n" + "\n".join(wrong)
    )
    stale = sorted(set(SHARED_ACROSS_SERVICES) - {i.imported for i in across})
    assert not stale, f"listed as shared but imported by no other service: {stale}"


def _may_speak_grpc(module: str) -> bool:
    return (
        _servicer_of(module) is not None
        or module.endswith(".__main__")
        or _within(module, "services.common")
        or module in GRPC_CLIENTS
    )


def test_grpc_stays_at_the_edges_of_services() -> None:
    speaking = {i.importer: i for i in IMPORTS if i.imported == "grpc"}
    wrong = [
        _where(i)
        for module, i in speaking.items()
        if _within(module, "services") and not _may_speak_grpc(module)
    ]
    assert not wrong, "core logic knows nothing of gRPC:\n" + "\n".join(wrong)
    stale = sorted(set(GRPC_CLIENTS) - set(speaking))
    assert not stale, f"listed as speaking gRPC but import no grpc: {stale}"


def test_no_private_names_across_modules() -> None:
    wrong = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not (isinstance(node, ast.ImportFrom) and node.module and not node.level):
                continue
            if _resolve(node.module) is None:
                continue  # another project's module
            wrong += [
                f"{path.relative_to(ROOT)}:{node.lineno}: imports {alias.name} from {node.module}"
                for alias in node.names
                if alias.name.startswith("_") and not alias.name.startswith("__")
            ]
    assert not wrong, "make a shared name public where it is defined:\n" + "\n".join(wrong)


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    graph: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_import_cycles() -> None:
    edges = {(i.importer, i.imported) for i in IMPORTS if i.imported != "grpc"}
    cycles = _cycles(edges)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({("a", "b"), ("b", "c")}, []),
        ({("a", "b"), ("b", "a"), ("b", "c")}, [["a", "b"]]),
        ({("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")}, [["a", "b", "c"]]),
        ({("a", "b"), ("b", "a"), ("c", "d"), ("d", "c")}, [["a", "b"], ["c", "d"]]),
    ],
)
def test_cycle_finder(edges: set[tuple[str, str]], expected: list[list[str]]) -> None:
    assert _cycles(edges) == expected
