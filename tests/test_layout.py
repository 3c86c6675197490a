"""The package's import graph: no cycle between its modules, and no import of its own modules
hidden inside a function except in the command line (which keeps ``--help`` fast)."""

import ast
from pathlib import Path

import benchsuite

PACKAGE = Path(benchsuite.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(node: ast.ImportFrom | ast.Import, modules: set[str]) -> set[str]:
    """The package's modules an import statement loads (``from pkg import mod`` included)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in modules}
    if not node.module or not node.module.startswith("benchsuite"):
        return set()
    found = {node.module} if node.module in modules else set()
    found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules}
    return found


def import_graph() -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """module → the modules it imports at load time; module → its function-local imports."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    local: dict[str, list[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        graph[name] = set()
        type_only = {
            id(inner)
            for node in tree.body
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
            for inner in node.body
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets = imported_modules(node, modules) - {name}
            if node.col_offset == 0 or id(node) in type_only:  # a type's import still counts
                graph[name] |= targets
            elif targets:
                local.setdefault(name, []).extend(sorted(targets))
    return graph, local


def test_no_cycle_between_the_package_modules():
    graph, _ = import_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(" → ".join(c) for c in cycles)


def test_only_the_command_line_imports_its_own_package_inside_functions():
    _, local = import_graph()
    outside_cli = {m: i for m, i in local.items() if not m.startswith("benchsuite.cli")}
    assert not outside_cli, outside_cli


def test_the_protocols_table_names_every_knob_of_every_builtin_method():
    """docs/protocol.md's defaults table: a row names each built-in method's every knob."""
    import dataclasses

    from benchsuite.core.method import method_registry

    doc = (PACKAGE.parent / "docs" / "protocol.md").read_text()
    table = doc.split("## Defaults: one rule for every method", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| ")]
    named = {
        (m.strip(), k.strip("` "))
        for methods, knobs in rows
        for m in methods.split(",")
        for k in knobs.split(",")
    }
    registry = method_registry()
    missing = [
        f"{name}.{f.name}"
        for name in registry.names()
        if registry.sources.get(name) == "benchsuite"
        for f in dataclasses.fields(registry.get(name).Hparams)
        if (name, f.name) not in named
    ]
    assert not missing, missing


def test_every_third_party_module_the_code_imports_is_a_declared_dependency():
    """CI installs only what pyproject.toml declares: an import that works here only because a
    package was installed by hand (or arrives as someone else's dependency) fails there."""
    import sys
    import tomllib
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement

    root = PACKAGE.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    declared = {Requirement(r).name.lower().replace("_", "-") for r in project["dependencies"]}
    owners = packages_distributions()
    own = {"benchsuite", "benchsuite_methods"}
    missing = set()
    for path in [*PACKAGE.rglob("*.py"), *(root / "methods").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - own - set(sys.stdlib_module_names):
                dists = {d.lower().replace("_", "-") for d in owners.get(top, [top])}
                if not dists & declared:
                    missing.add(f"{top} ({path.relative_to(root)})")
    assert not missing, f"imported but not in pyproject's dependencies: {sorted(missing)}"
