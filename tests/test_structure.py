"""The package's structure: which module imports which."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tlcourse"

# Two floors. The tool: what retrain.py, label_image.py and every `python -m tlcourse.*` command run,
# and what they need. It must work, and be read and tested, without the lessons.
CORE = {
    "atomic", "backbones", "bottlenecks", "calibration", "compare", "config", "data", "datasets", "demo",
    "download", "efficientnet_lite", "errors", "export", "finetune", "formats", "hardware", "images", "label",
    "litert", "model_card", "pipeline", "preprocessing", "quiet", "retrain", "safe_graph", "search", "stats",
    "tflite", "tflite_metadata", "torch_weights", "train",
}  # fmt: skip
# The lessons' helpers: experiments, figures, panels, the graded exercises (a subpackage counts as one
# module). They may use the tool; the tool never imports them, not even inside a function.
LESSON_HELPERS = {
    "book", "capstone", "course", "depths", "embeddings", "exercises", "many_classes", "plots", "widgets",
    "your_data",
}  # fmt: skip


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, at its top or inside a function (a subpackage's: its name)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "tlcourse":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tlcourse."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("tlcourse.")}
    return (found & modules) - ({path.stem} if path.parent == PACKAGE else set())


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


def package_modules() -> dict[str, list[Path]]:
    """Each module of the package and its files; a subpackage (``exercises``) is one module of all its files.

    The package's ``__init__`` is left out: it imports nothing itself, it loads a submodule by name when
    one is used (``tlc.embeddings``).
    """
    modules = {path.stem: [path] for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    for init in PACKAGE.glob("*/__init__.py"):
        modules[init.parent.name] = sorted(init.parent.rglob("*.py"))
    return modules


def chain_to(graph: dict[str, set[str]], start: str, targets: set[str]) -> list[str] | None:
    """The shortest import chain ``[start, ..., target]`` from ``start`` to any of ``targets``, or None."""
    came_from, queue = {start: None}, [start]
    for node in queue:
        if node in targets and node != start:
            chain = [node]
            while came_from[chain[-1]] is not None:
                chain.append(came_from[chain[-1]])
            return chain[::-1]
        for after in sorted(graph[node] - set(came_from)):
            came_from[after] = node
            queue.append(after)
    return None


def test_every_module_of_the_package_is_on_exactly_one_floor():
    """A new module must be classified: the tool's core, or a lesson helper."""
    modules = set(package_modules())
    assert not CORE & LESSON_HELPERS, f"on both floors: {sorted(CORE & LESSON_HELPERS)}"
    assert not modules - CORE - LESSON_HELPERS, (
        f"on neither floor, add to CORE or LESSON_HELPERS: {sorted(modules - CORE - LESSON_HELPERS)}"
    )
    assert not (CORE | LESSON_HELPERS) - modules, (
        f"listed but not in the package: {sorted((CORE | LESSON_HELPERS) - modules)}"
    )


def test_no_module_of_the_tools_core_imports_a_lesson_helper_even_lazily():
    """Through any chain of imports (label -> search -> embeddings was one): the tool stands without the lessons."""
    modules = package_modules()
    graph = {
        name: set().union(*(imports_of(path, set(modules)) for path in paths)) - {name}
        for name, paths in modules.items()
    }
    chains = [chain_to(graph, module, LESSON_HELPERS) for module in sorted(CORE)]
    assert not [chain for chain in chains if chain], "\n".join(" -> ".join(c) for c in chains if c)
    toy = {"a": {"b"}, "b": {"c", "d"}, "c": set(), "d": set()}
    assert chain_to(toy, "a", {"d"}) == ["a", "b", "d"]  # the check itself finds one


def test_every_module_is_reachable_as_an_attribute_of_the_package():
    """``tlc.name`` loads any module of the package on first use, a new one included."""
    import tlcourse

    modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"} | {"exercises"}
    assert set(tlcourse.SUBMODULES) == modules
    assert tlcourse.errors.TLCourseError and tlcourse.preprocessing.PREPROCESSINGS
