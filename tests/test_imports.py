"""No import cycles between litefer's modules (imports inside functions included: a cycle there
still ties two modules together, and breaks as soon as one import moves to the top)."""
import ast
from pathlib import Path

import litefer

# cycles someone is already breaking; remove an entry once it is gone (the test then insists)
KNOWN_CYCLES: list[set[str]] = []


def module_graph(package_dir: Path) -> dict[str, set[str]]:
    """litefer module -> the litefer modules it imports, from the source's import statements."""
    files = {}
    for p in package_dir.rglob("*.py"):
        parts = p.relative_to(package_dir.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {}
    for name, path in files.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1] + [node.module or ""] if node.level
                                else [node.module or ""]).strip(".")
                subs = {f"{base}.{a.name}" for a in node.names}
                deps.update(subs & files.keys())                      # `from . import mod` is mod only
                deps.update({base} if subs - files.keys() else set())
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index, low, stack, found = {}, {}, [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while not group or v not in group:
                group.add(stack.pop())
            if len(group) > 1:
                found.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_cycles_in_litefer():
    found = cycles(module_graph(Path(litefer.__file__).parent))
    assert sorted(map(sorted, found)) == sorted(map(sorted, KNOWN_CYCLES)), found


# Layers, bottom first. A unit (a subpackage, or a top-level module) imports only from its own unit
# and from lower layers; the recognition layers (up to litefer.fetch) are torch-free, so that
# `pip install litefer` recognizes and serves with no torch installed. Torch code above them is
# reached by name only (``litefer.inference.backends.TORCH_PLUGIN``), like an entry point.
LAYERS = [
    ("litefer.version", "litefer.utils"), ("litefer.onnxproto", "litefer.preprocess"), ("litefer.card",), ("litefer.prior",),
    ("litefer.inference",), ("litefer.fetch", "litefer.distributed"),
    ("litefer.models", "litefer.data", "litefer.losses"), ("litefer.weights",), ("litefer.export",),
    ("litefer.torch_backend", "litefer.profile"), ("litefer.train", "litefer.serve"), ("litefer.package",),
    ("litefer.reproduce",), ("litefer.cli",), ("litefer.__main__", "litefer"),
]
TORCH_FREE = {u for layer in LAYERS[:LAYERS.index(("litefer.fetch", "litefer.distributed")) + 1] for u in layer} | {"litefer.serve"}


def unit_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def upward_imports(graph: dict[str, set[str]], layers) -> list[str]:
    rank = {u: i for i, layer in enumerate(layers) for u in layer}
    found = []
    for module, deps in graph.items():
        unit = unit_of(module)
        assert unit in rank, f"{unit} has no layer in tests/test_imports.py LAYERS: place it"
        found += [f"{module} -> {d}" for d in sorted(deps)
                  if unit_of(d) != unit and rank[unit_of(d)] >= rank[unit]]
    return found


def test_upward_import_finder_finds_one():
    graph = {"litefer.inference.a": {"litefer.export.b"}, "litefer.export.b": {"litefer.inference.a"}}
    assert upward_imports(graph, [("litefer.inference",), ("litefer.export",)]) == [
        "litefer.inference.a -> litefer.export.b"]


def test_no_package_imports_upward():
    assert upward_imports(module_graph(Path(litefer.__file__).parent), LAYERS) == []


def test_recognition_and_serving_layers_never_import_torch():
    """No import statement of torch (at the top or inside a function) in the torch-free units."""
    root = Path(litefer.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if unit_of(".".join(p for p in parts if p != "__init__")) not in TORCH_FREE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("torch", "torchvision", "onnx")]
    assert offenders == []
