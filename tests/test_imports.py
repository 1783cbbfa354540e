"""The package's import graph, read with ast (imports inside functions count): no cycle, and the lower
modules import nothing above them."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "deliberate_cli"
# The modules everything else stands on; they import only one another.
LEAVES = {"errors", "config", "rundir", "store", "spec", "usage", "progress", "processes", "cot"}


def _graph():
    def name(path: Path) -> str:
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name(p): p for p in PKG.rglob("*.py")}
    edges = {m: set() for m in modules}
    for m, path in modules.items():
        base = m.split(".") if path.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                stem = (".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
                        if node.level else node.module or "")
                targets = [stem] + [f"{stem}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != m and not m.startswith(t + "."):  # a module may import its own package
                    edges[m].add(t)
    return edges


def _cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycle():
    edges = _graph()
    assert "deliberate_cli.pipeline" in edges and len(edges) > 40  # the walk found the package
    assert _cycles(edges) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_lower_modules_import_nothing_above_them():
    edges = _graph()
    leaves = {f"deliberate_cli.{m}" for m in LEAVES}
    upward = {m: sorted(t for t in edges[m] if t not in leaves) for m in leaves}
    assert upward == {m: [] for m in leaves}
