"""The house rules of docs/architecture.md, checked on the source: no import circle anywhere in
``src/deeplift`` (imports inside functions and ``importlib.import_module`` calls count), and
nothing outside ``deeplift.legacy`` imports it except the aliases at the original library's
public module paths."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "deeplift"

#: the original library's public module paths: each only re-exports ``deeplift.legacy``
ORIGINAL_PATHS = {
    "deeplift.models", "deeplift.util", "deeplift.dinuc_shuffle", "deeplift.blobs",
    "deeplift.backend", "deeplift.conversion", "deeplift.conversion.kerasapi_conversion",
    "deeplift.conversion.keras_conversion", "deeplift.visualization",
    "deeplift.visualization.viz_sequence", "deeplift.layers", "deeplift.layers.core",
    "deeplift.layers.convolutional", "deeplift.layers.normalization",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``module`` imports, anywhere in its code."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def target(name: str) -> None:
        while name and name not in known:  # a name imported from a module, not a module
            name = name.rpartition(".")[0]
        if name.startswith("deeplift"):
            found.add(name)

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                target(a.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for a in node.names:
                full = f"{base}.{a.name}"
                target(full if full in known else base)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            name = node.args[0].value
            if name.startswith("."):
                level = len(name) - len(name.lstrip("."))
                name = _resolve(module, is_package, level, name.lstrip(".") or None)
            target(name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, set(modules)) for m, p in modules.items()}


def test_the_walker_sees_imports_inside_functions_and_importlib_calls(graph):
    assert "deeplift.frontends.torch" in graph["deeplift"]  # inside deeplift.convert()
    assert "deeplift.legacy.layers" in graph["deeplift.layers"]  # importlib in __getattr__


def test_no_import_circle_in_the_package(graph):
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                circle = path[path.index(n):] + [n]
                pytest.fail("import circle: " + " -> ".join(circle))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_only_the_original_paths_import_the_legacy_package(graph):
    offenders = {m: sorted(n for n in deps if n.startswith("deeplift.legacy"))
                 for m, deps in graph.items()
                 if not m.startswith("deeplift.legacy") and m not in ORIGINAL_PATHS}
    offenders = {m: deps for m, deps in offenders.items() if deps}
    assert not offenders, f"modules outside deeplift.legacy import it: {offenders}"


def test_the_original_paths_are_aliases_only(graph):
    """An alias module holds a docstring and a few lines of re-export, nothing of its own."""
    modules = _modules()
    for name in ORIGINAL_PATHS - {"deeplift.layers"}:
        if name not in modules:
            continue
        tree = ast.parse(modules[name].read_text())
        code = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        kinds = {type(n).__name__ for n in code}
        assert kinds <= {"Import", "ImportFrom", "Assign"}, (name, kinds)
        assert len(code) <= 6, (name, len(code))


def test_the_core_layers_flow_one_way(graph):
    """front ends -> graph -> layers; engine -> graph, layers; nothing below imports above."""
    below = {"deeplift.graph", "deeplift.engine", "deeplift.methods", "deeplift.rules",
             "deeplift.arrays"} | {m for m in graph if m.startswith("deeplift.layers.")}
    above = {"deeplift.api", "deeplift.plan", "deeplift.cli"} | {
        m for m in graph if m.startswith(("deeplift.frontends", "deeplift.cli."))}
    for m in below - ORIGINAL_PATHS:
        assert not graph[m] & above, (m, sorted(graph[m] & above))
