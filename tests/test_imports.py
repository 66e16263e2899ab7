"""The package's import graph: no cycles, and PyTorch only in the training wing (train/, export/); and no
module uses a name it never defines or imports.

Walks every module of src/dermalens with `ast` (nothing is imported to build the graph), counting
imports inside functions too: a lazy import that closes a loop is still a loop, it only fails later.
"""
import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "dermalens"
TORCH = {"torch", "torchvision", "timm", "onnx"}
TRAINING_WING = ("dermalens.train", "dermalens.export")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def imports(path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import statement of a file."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    top_level = {id(n) for n in tree.body} | {id(n) for s in tree.body if isinstance(s, (ast.If, ast.Try))
                                             for n in ast.walk(s)}
    out = []
    for node in ast.walk(tree):
        level = id(node) in top_level
        if isinstance(node, ast.Import):
            out += [(a.name, level) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            out.append((target, level))
            # `from . import x` where x is a submodule imports that submodule
            out += [(f"{target}.{a.name}", level) for a in node.names if f"{target}.{a.name}" in known]
    return out


def graph(module_level_only=False) -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    edges = {}
    for name, path in mods.items():
        edges[name] = {t for t, level in imports(path, known)
                       if t in known and t != name and (level or not module_level_only)}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        state[n] = "done"
        stack.pop()
        return None

    for n in sorted(edges):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_walk_sees_the_package():
    edges = graph()
    assert "dermalens.cli" in edges and "dermalens.train.loop" in edges
    assert "dermalens.train.checkpoint_io" in edges["dermalens.train.loop"]  # relative imports resolved
    assert "dermalens.train.loop" in edges["dermalens.cli"]  # function-level imports counted


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_torch_only_in_the_training_wing():
    known = set(modules())
    offenders = [f"{name} imports {target}" for name, path in modules().items()
                 if not name.startswith(TRAINING_WING)
                 for target, _ in imports(path, known) if target.split(".")[0] in TORCH]
    assert not offenders, offenders


def test_serving_modules_do_not_reach_the_training_wing_at_import():
    edges = graph(module_level_only=True)
    serving = [m for m in edges if not m.startswith(TRAINING_WING)]
    for root in serving:
        seen, todo = set(), [root]
        while todo:
            m = todo.pop()
            if m in seen:
                continue
            seen.add(m)
            todo += edges.get(m, ())
        wing = sorted(m for m in seen if m.startswith(TRAINING_WING))
        assert not wing, f"importing {root} imports {wing}"


def test_importing_the_serving_side_loads_no_torch():
    """The same, for real: a fresh interpreter imports the CLI, API, GUI back end and compare."""
    code = ("import sys; import dermalens.cli, dermalens.serve.app, dermalens.gui.backend, "
            "dermalens.evaluate.compare, dermalens.evaluate.metrics, dermalens.predict, dermalens.bench; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchvision', 'timm'}); "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_undefined_names():
    """A name used but never imported or defined (a module that lost its `import os`) fails only when that line
    runs, which for `fit-gate` is after minutes of fitting; pyflakes finds it without running anything."""
    import pyflakes.api as pyflakes
    from pyflakes import messages
    from pyflakes.reporter import Reporter

    class Collect(Reporter):
        def __init__(self):
            super().__init__(None, None)
            self.found = []

        def flake(self, message):
            if isinstance(message, (messages.UndefinedName, messages.UndefinedLocal, messages.UndefinedExport)):
                self.found.append(str(message))

        def syntaxError(self, filename, msg, lineno, offset, text):
            self.found.append(f"{filename}:{lineno}: {msg}")
    reporter = Collect()
    pyflakes.checkRecursive([str(SRC)], reporter)
    assert not reporter.found, reporter.found
