"""No import circles inside the tfmr package.

Every module under tfmr/ is parsed with `ast` (never imported); each `import` / `from ... import`
that names a tfmr module, at top level or inside a function or class, relative or absolute, is an
edge. Packages are handled generically: a package is its `__init__.py`, and importing a name from a
package is an edge to the submodule of that name when one exists, else to the package itself.
Circles are found with Tarjan's strongly connected components and listed in full.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "tfmr"
PACKAGE = "tfmr"


def module_names(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted name -> file, for every module and package under `root`."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join([package, *parts])] = path
    return names


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _resolve(node: ast.ImportFrom, current: str, modules: dict[str, Path]) -> str | None:
    """The absolute dotted name a `from X import ...` starts from (None: outside tfmr)."""
    if node.level == 0:
        return node.module
    base = current.split(".")
    if not _is_package(current, modules):
        base = base[:-1]  # a module's relative imports start at its package
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _target(name: str | None, modules: dict[str, Path]) -> str | None:
    """The tfmr module `name` refers to: itself, or the nearest enclosing module that exists."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the tfmr modules it imports (anywhere in the file)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for current, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [_target(alias.name, modules) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, current, modules)
                if base is None or _target(base, modules) is None:
                    continue
                for alias in node.names:  # `from pkg import submodule` is an edge to the submodule
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else _target(base, modules))
            for t in targets:
                if t is not None and t != current:
                    graph[current].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a circle."""
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
        for w in sorted(graph[v]):
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
                found.append(_circle(sorted(component), graph))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _circle(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One concrete circle through the component's first module: a -> b -> ... -> a."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:  # breadth first, so the circle shown is a shortest one
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return component


def test_tfmr_has_no_import_cycles():
    found = cycles(import_graph(module_names()))
    listed = "\n".join(" -> ".join(c) for c in found)
    assert not found, f"import cycles inside tfmr/:\n{listed}"


def test_the_checker_finds_circles_through_relative_imports_and_function_bodies(tmp_path):
    """A made-up package: a circle a -> b -> a where b imports a inside a function, a package
    whose __init__ imports its submodule and a module importing the package (a second circle),
    and an import of a name from the package that is not a submodule."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import thing\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n    return a\n")
    (pkg / "c.py").write_text("from .sub import helper\n")
    (pkg / "sub" / "__init__.py").write_text("from .helper import helper\n")
    (pkg / "sub" / "helper.py").write_text("import pkg.c\n\ndef helper():\n    pass\n")
    (pkg / "d.py").write_text("from pkg.sub import VALUE\nfrom .. import elsewhere\nimport os\n")
    modules = module_names(pkg, "pkg")
    graph = import_graph(modules)
    assert graph["pkg.d"] == {"pkg.sub"}
    assert graph["pkg.sub.helper"] == {"pkg.c"}
    found = {tuple(c) for c in cycles(graph)}
    assert ("pkg.a", "pkg.b", "pkg.a") in found
    assert ("pkg.c", "pkg.sub.helper", "pkg.c") in found or (
        "pkg.c",
        "pkg.sub",
        "pkg.sub.helper",
        "pkg.c",
    ) in found
    assert len(found) == 2
