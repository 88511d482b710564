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
                deps.update([base] + [f"{base}.{a.name}" for a in node.names])
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
