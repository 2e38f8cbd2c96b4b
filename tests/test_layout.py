"""The package's import direction (README "Where things are"): stages import services and the model zoos,
never the reverse; `ship` never imports training code; no import cycle between modules or packages."""

from __future__ import annotations

import ast
from pathlib import Path

import asc_dist

ROOT = Path(asc_dist.__file__).parent
SERVICES = ("run", "data", "training", "infra", "nets")
STAGES = ("teach", "fuse", "distill", "ship", "study", "pipeline")


def module_name(path: Path) -> str:
    parts = ("asc_dist", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every asc_dist module a file imports, at the top or inside a function."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    modules = {module_name(p) for p in ROOT.rglob("*.py")}
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in ROOT.rglob("*.py")}


def area(module: str) -> str:
    """The package right under asc_dist a module lives in ('' for the top-level modules)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (ROOT / parts[1]).is_dir()) else ""


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_area_is_a_service_or_a_stage():
    areas = {area(m) for m in graph()} - {""}
    assert areas == set(SERVICES) | set(STAGES), areas


def test_services_never_import_stages():
    wrong = [(m, d) for m, deps in graph().items() if area(m) in SERVICES for d in deps if area(d) in STAGES or area(d) == ""]
    allowed = {"asc_dist.errors", "asc_dist.cli", "asc_dist"}
    wrong = [(m, d) for m, d in wrong if d not in allowed]
    assert not wrong, wrong


def test_ship_never_imports_training_code():
    wrong = [(m, d) for m, deps in graph().items() if area(m) == "ship" for d in deps if area(d) in ("training", "distill")]
    assert not wrong, wrong


def test_no_import_cycle_between_modules():
    assert not cycles(graph())


def test_no_import_cycle_between_packages():
    edges: dict[str, set[str]] = {}
    for m, deps in graph().items():
        if area(m):
            edges.setdefault(area(m), set()).update(area(d) for d in deps if area(d) and area(d) != area(m))
    assert not cycles(edges)


def test_the_checks_can_fail():
    """The cycle finder and the area rule see what they must (a check that cannot fail proves nothing)."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert area("asc_dist.ship.load") == "ship" and area("asc_dist.teachers") == "" and area("asc_dist.data") == "data"
