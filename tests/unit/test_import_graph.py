"""vmcri's modules import each other without a cycle (house rule 13), and so do its
packages (house rule 16: calls across a seam run one way).

Every import counts, also those under ``if TYPE_CHECKING:`` and inside functions: a
cycle hidden that way still ties the modules together (the gRPC edge once reached
the daemon through ``cri/rpc_common.py -> daemon.py -> cri/server.py``). A loop between
packages needs no module cycle: ``handlers/vm/backend.py`` imported
``supervisor/containers.py``, which imported ``handlers/base.py``, so the two packages
could only be read, and changed, together.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import vmcri

PACKAGE = Path(vmcri.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.AST, known: set[str]) -> Iterator[str]:
    """The vmcri modules a module's source imports, wherever the statement stands."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from a.b import c`` imports a.b, and a.b.c when c is a module.
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        yield from (name for name in names if name in known)


def import_graph() -> dict[str, set[str]]:
    paths = {
        module_name(p): p
        for p in PACKAGE.rglob("*.py")
        if "api" not in p.relative_to(PACKAGE).parts
    }
    known = set(paths)
    return {
        name: set(imported(ast.parse(path.read_text(), str(path)), known)) - {name}
        for name, path in paths.items()
    }


def package_of(module: str) -> str:
    """``vmcri.handlers.vm.backend`` -> ``vmcri.handlers``; a top-level module
    (``vmcri.config``) is a package of its own."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Which vmcri package imports which other, from the modules' imports."""
    packages: dict[str, set[str]] = {package_of(name): set() for name in graph}
    for name, deps in graph.items():
        packages[package_of(name)].update(package_of(dep) for dep in deps)
    for name, deps in packages.items():
        deps.discard(name)
    return packages


def importers(graph: dict[str, set[str]], source: str, target: str) -> list[str]:
    """The module imports that make package ``source`` import package ``target``."""
    return sorted(
        f"{name} -> {dep}"
        for name, deps in graph.items()
        if package_of(name) == source
        for dep in deps
        if package_of(dep) == target
    )


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle as a path that starts and ends at the same module; [] when there is none."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> list[str]:
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(graph[node]):
            if dep in on_stack:
                return [*stack[stack.index(dep) :], dep]
            if dep not in done:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        on_stack.discard(node)
        done.add(node)
        return []

    for start in sorted(graph):
        if start not in done:
            found = visit(start)
            if found:
                return found
    return []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_a_loop_between_packages_is_found_where_modules_have_no_cycle() -> None:
    # As it was: handlers.vm.backend -> supervisor.containers -> handlers.base.
    graph: dict[str, set[str]] = {
        "vmcri.handlers.vm.backend": {"vmcri.supervisor.containers", "vmcri.handlers.base"},
        "vmcri.supervisor.containers": {"vmcri.handlers.base"},
        "vmcri.handlers.base": set(),
        "vmcri.config": set(),
    }
    assert find_cycle(graph) == []
    packages = package_graph(graph)
    assert packages == {
        "vmcri.handlers": {"vmcri.supervisor"},
        "vmcri.supervisor": {"vmcri.handlers"},
        "vmcri.config": set(),
    }
    assert find_cycle(packages) == ["vmcri.handlers", "vmcri.supervisor", "vmcri.handlers"]


def test_imports_under_type_checking_and_in_functions_count() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from vmcri.daemon import Daemon\n"
        "def build():\n"
        "    from vmcri.cri import server\n"
        "    import vmcri.config\n"
    )
    known = {"vmcri.daemon", "vmcri.cri", "vmcri.cri.server", "vmcri.config"}
    assert set(imported(ast.parse(source), known)) == known


def test_vmcri_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle == [], " -> ".join(cycle)


def test_vmcri_has_no_import_loop_between_packages() -> None:
    graph = import_graph()
    cycle = find_cycle(package_graph(graph))
    steps = [importers(graph, a, b) for a, b in itertools.pairwise(cycle)]
    assert cycle == [], " -> ".join(cycle) + "".join(f"\n  {s}" for s in steps)


def test_the_supervisor_imports_nothing_of_the_handlers_or_the_runtime() -> None:
    packages = package_graph(import_graph())
    assert packages["vmcri.supervisor"] & {"vmcri.handlers", "vmcri.runtime"} == set()


def test_the_edge_does_not_import_the_daemon() -> None:
    graph = import_graph()
    edge = [name for name in graph if name.startswith("vmcri.cri.")]
    assert edge
    assert [name for name in edge if "vmcri.daemon" in graph[name]] == []


def test_each_edge_module_imports_first_in_a_fresh_interpreter() -> None:
    """An import cycle shows as an ImportError when the module in the middle comes first."""
    modules = ["vmcri.cri.rpc_common", "vmcri.cri.server", "vmcri.cri.runtime_service"]
    for module in modules:
        code = f"import sys, {module}; assert 'vmcri.daemon' not in sys.modules"
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"{module}: {result.stderr}"
