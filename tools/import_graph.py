"""The import graph of segsweep's packages (``orchestrator``, ``models``, ``reports``), read from the source with
``ast``: every import, at module level or inside a function, is an edge. Prints each module with the project modules
it imports and its layer, then fails (exit 1) on

- a cycle (imports inside functions count: a lazy import does not make a cycle go away);
- an import that goes up the layers (``LAYERS``: schema and names, registries, spec loading, the trial, the
  driver, reports, the study, the CLI);
- a function-level import of a project module or a heavy library with no comment saying why it is lazy.

Run: ``python -m tools.import_graph`` (``--quiet`` prints the failures only).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "models", "reports", "benchmarks")  # benchmarks: any Python script kept there

# Bottom to top. A module may import its own layer and the layers below it. The first matching prefix wins.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("schema and names", ("models.errors", "orchestrator.errors", "orchestrator.files", "orchestrator.rundir",
                          "orchestrator.spec.schema", "orchestrator.spec.keys", "orchestrator.store",
                          "orchestrator.gpu", "orchestrator.mps", "orchestrator.failures", "orchestrator.budgets")),
    ("registries", ("models", "orchestrator.data", "orchestrator.latency", "orchestrator.tracking")),
    ("spec loading", ("orchestrator.spec",)),
    ("trial", ("orchestrator.trial", "orchestrator.runs", "orchestrator.pool")),
    ("driver", ("orchestrator.driver",)),
    ("reports", ("reports",)),
    ("study", ("orchestrator.study", "orchestrator.bench", "orchestrator.service")),
    ("cli", ("orchestrator.cli", "orchestrator", "benchmarks")),
]
# third-party imports that take seconds (or a GPU context): inside a function they need a reason in a comment
HEAVY = ("torch", "ray", "lightning", "segmentation_models_pytorch", "timm", "wandb", "onnx", "onnxruntime",
         "optuna", "plotly", "pandas", "torchvision")


@dataclass
class Module:
    name: str
    path: Path
    imports: dict[str, int] = field(default_factory=dict)  # project module -> first line
    lazy: list[tuple[int, str, bool]] = field(default_factory=list)  # (line, imported, has a reason)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, in_function: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child):
            continue  # never executed
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, in_function
        yield from _walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))


def _resolve(known: dict[str, Path], current: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules a statement imports (project modules by name, others by their top-level name)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = current.split(".")
        if not known[current].name == "__init__.py":
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    targets = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        targets.append(sub if sub in known else base)
    return targets


def _has_reason(lines: list[str], lineno: int) -> bool:
    """A comment on the import's line, or on the lines of comments and imports (blank lines between) just above it."""
    i = lineno - 1
    if "#" in lines[i]:
        return True
    i -= 1
    while i >= 0 and (not lines[i].strip() or lines[i].strip().startswith(("#", "import ", "from "))):
        if lines[i].strip().startswith("#"):
            return True
        i -= 1
    return False


def read_graph() -> dict[str, Module]:
    known = discover()
    graph = {}
    for name, path in known.items():
        module = Module(name, path)
        text = path.read_text()
        lines = text.splitlines()
        for node, in_function in _walk(ast.parse(text, str(path))):
            for target in _resolve(known, name, node):
                project = target in known or target.split(".")[0] in PACKAGES
                if project and target in known and target != name:
                    module.imports.setdefault(target, node.lineno)
                if in_function and (project or target.split(".")[0] in HEAVY):
                    module.lazy.append((node.lineno, target, _has_reason(lines, node.lineno)))
        graph[name] = module
    return graph


def layer_of(name: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return index
    raise KeyError(f"{name}: in no layer of tools/import_graph.py LAYERS")


def cycles(graph: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v].imports:
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

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def problems(graph: dict[str, Module]) -> list[str]:
    out = [f"cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    for name, module in sorted(graph.items()):
        here = layer_of(name)
        for target, line in module.imports.items():
            if layer_of(target) > here:
                out.append(f"{module.path.relative_to(ROOT)}:{line}: {name} ({LAYERS[here][0]}) imports {target} "
                           f"({LAYERS[layer_of(target)][0]}), a layer above it")
        if name.startswith("models") and any(t.startswith("orchestrator") for t in module.imports):
            out.append(f"{module.path.relative_to(ROOT)}: models/ imports orchestrator")
        for line, target, reason in module.lazy:
            if not reason:
                out.append(f"{module.path.relative_to(ROOT)}:{line}: import of {target} inside a function, with no "
                           f"comment saying why it is lazy")
    return out


def main(argv: list[str]) -> int:
    graph = read_graph()
    if "--quiet" not in argv:
        for index, (title, _) in enumerate(LAYERS):
            members = [m for m in sorted(graph) if layer_of(m) == index]
            if not members:
                continue
            print(f"## {index} {title}")
            for name in members:
                deps = ", ".join(sorted(graph[name].imports)) or "-"
                print(f"{name} -> {deps}")
            print()
    found = problems(graph)
    for line in found:
        print(line)
    edges = sum(len(m.imports) for m in graph.values())
    print(f"{len(graph)} modules, {edges} imports, {len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
