"""The house has floors: imports go down, never up, and never in a circle.

Every import counts, also one inside a function or under TYPE_CHECKING, so a
circle cannot hide behind a late import. See docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("proxy", "translators", "policies")

#: bottom to top; a module may import its own floor or those below it
FLOORS: tuple[tuple[str, ...], ...] = (
    ("proxy.config",),
    ("proxy.core",),
    ("translators", "proxy.state"),
    ("proxy.engine",),
    ("policies",),
    ("proxy.server", "proxy.__main__"),
)
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _floor(module: str) -> int:
    if module == "proxy":  # the package itself holds only __version__
        return 0
    for level, prefixes in enumerate(FLOORS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{module} is on no floor: add it to FLOORS in tests/test_layout.py")


def _imports(module: str, path: Path) -> set[str]:
    """The project modules `module` imports, anywhere in its body."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from pkg import mod` depends on pkg.mod; `from mod import name` on mod
            submodules = [f"{origin}.{a.name}" for a in node.names
                          if f"{origin}.{a.name}" in MODULES]
            candidates = submodules if len(submodules) == len(node.names) else [origin]
        else:
            continue
        for name in candidates:
            # `import a.b.c` names a.b.c; a name imported from a module is not a module
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _is_package_of(parent: str, child: str) -> bool:
    """Importing `proxy.core.x` runs `proxy.core/__init__`: not an import of it by choice."""
    return child.startswith(parent + ".")


def test_every_module_is_on_a_floor():
    for module in MODULES:
        _floor(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_goes_up(module):
    mine = _floor(module)
    upward = sorted(t for t in GRAPH[module]
                    if _floor(t) > mine and not _is_package_of(t, module))
    assert not upward, f"{module} (floor {mine}) imports from above: " + ", ".join(
        f"{t} (floor {_floor(t)})" for t in upward)


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    return found


def test_no_import_circles():
    cycles = _cycles()
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_modules_stay_small():
    big = {m: n for m, p in MODULES.items()
           if (n := len(p.read_text(encoding="utf-8").splitlines())) >= MAX_LINES}
    assert not big, f"modules of {MAX_LINES}+ lines: {big}"


def test_the_walker_sees_a_circle_and_an_upward_import():
    """The checks above can fail: a fake graph with both faults is caught."""
    saved = dict(GRAPH)
    try:
        GRAPH["proxy.core.errors"] = GRAPH["proxy.core.errors"] | {"proxy.server.app"}
        assert any("proxy.core.errors" in c for c in _cycles())
        assert _floor("proxy.server.app") > _floor("proxy.core.errors")
    finally:
        GRAPH.clear()
        GRAPH.update(saved)
