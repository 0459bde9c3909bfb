"""The package's structure: which module imports which."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tlcourse"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "tlcourse":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tlcourse."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("tlcourse.")}
    return (found & modules) - {path.stem}


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for after in sorted(graph[node]):
            if state.get(after) == "open":
                return [*path[path.index(after) :], after]
            if after not in state and (found := visit(after, [*path, after])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_two_modules_import_each_other_even_lazily():
    """A cycle (backbones and tflite, label and search were ones) means no module can be read or tested first."""
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    graph = {path.stem: imports_of(path, modules) for path in PACKAGE.glob("*.py")}
    assert cycle_in(graph) is None, " -> ".join(cycle_in(graph))
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check itself finds one


def test_the_litert_engine_imports_neither_backbones_nor_the_phone_export():
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    assert imports_of(PACKAGE / "litert.py", modules) <= {"atomic", "quiet", "safe_graph"}
    assert "tflite" not in imports_of(PACKAGE / "backbones.py", modules)
