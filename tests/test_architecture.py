"""The import graph matches the layers of README's Layout section.

Every ``import`` in ``src/stelab`` (top-level and inside functions alike: a lazy import is still a dependency) is
resolved to the stelab module it names and checked against the layer rules below; a module may import its own layer
and the layers listed for it, nothing else. Separately, the import graph must have no cycle, neither among the
imports executed at module load (such a cycle makes the import order matter) nor with the lazy ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "stelab"

# Folders are the layers. The modules at the package root (errors, io) are the base; the core's folders, from the
# bottom: the estimators, the fused op's backends, what both sides share (LSQ, scales, patterns) and the packing of
# saved tensors, the twin activations and weights packages (which never import each other), the network level.
CORE_LAYERS = ("ste", "kernels", "quant", "pack", "activations", "weights", "network")
CORE = set(CORE_LAYERS)
# layer -> the layers it may import besides itself
ALLOWED = {
    "base": set(),
    "ste": {"base"},
    "kernels": {"base"},
    "quant": {"base", "ste", "kernels"},
    "pack": {"base", "kernels"},
    "activations": {"base", "ste", "kernels", "quant", "pack"},
    "weights": {"base", "ste", "kernels", "quant"},
    "network": {"base", "ste", "activations", "weights"},
    # theory is math: the STE registry, the op and the quantizers, and errors; no files, data, reports or configs
    "theory": {"errors", "ste", "kernels", "activations-math"},
    "data": {"base"},
    "models": {"base", *CORE},
    "train": {"base", *CORE, "data", "models"},
    "diagnostics": {"base", *CORE, "theory", "models", "data"},
    # executors run any picklable task on a pool, Ray or SLURM: they know no model, data set or training loop
    "executors": {"base"},
    "experiments": {"base", *CORE, "theory", "data", "models", "train", "diagnostics", "executors"},
    # export reads a trained module (quantizers, modules, weights) and writes ONNX / runs integer math: no training,
    # data or models; the core never imports it (onnx is an optional extra)
    "export": {"base", *CORE},
    "cli": {"base", *CORE, "theory", "data", "models", "train", "diagnostics", "experiments", "executors", "export"},
}
# what theory may use of the activations: the forward quantizers, Lloyd's resolution and the op (not configs, modules)
ACTIVATIONS_MATH = {"stelab.activations.quantizers", "stelab.activations.lloyd", "stelab.activations.ops"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    """A module's layer: its folder under ``stelab`` (``stelab.activations.ops`` -> ``activations``); the modules at
    the package root (``stelab.errors``, ``stelab.io`` and the package's lazy ``__init__``) are the base."""
    parts = module.split(".")
    if len(parts) == 1 or module in ("stelab.errors", "stelab.io"):
        return "base"
    if parts[1] == "__main__":
        return "cli"
    return parts[1]


def allowed(src: str, dst: str) -> bool:
    a, b = layer(src), layer(dst)
    if a == b:
        return True
    rules = ALLOWED[a]
    if "errors" in rules and dst == "stelab.errors":
        return True
    if "activations-math" in rules and dst in ACTIVATIONS_MATH:
        return True
    return b in rules


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom, known: set[str]) -> list[str]:
    if node.level:
        base = importer.split(".") if is_package else importer.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("stelab"):
        return []
    # `from pkg import name` imports the submodule pkg.name when there is one, else an attribute of pkg
    subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
    return subs if len(subs) == len(node.names) else [target, *subs]


def imports(top_level_only: bool = False) -> dict[str, set[str]]:
    """stelab module -> the stelab modules it imports (resolved to existing modules)."""
    known = set(modules())
    graph: dict[str, set[str]] = {}
    for name, path in modules().items():
        tree = ast.parse(path.read_text(), str(path))
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        deps: set[str] = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("stelab"))
            elif isinstance(node, ast.ImportFrom):
                deps.update(_resolve(name, path.name == "__init__.py", node, known))
        graph[name] = {_existing(d, known) for d in deps} - {name}
    return graph


def _existing(module: str, known: set[str]) -> str:
    while module not in known and "." in module:
        module = module.rsplit(".", 1)[0]
    return module


def test_every_module_is_in_a_known_layer():
    unknown = sorted({layer(m) for m in modules()} - set(ALLOWED))
    assert not unknown, f"modules outside the layers of the Layout section: {unknown}"


def test_the_package_root_holds_only_the_base():
    """Every module lives in the folder of its layer: the root keeps the base (errors, io) and the entry points."""
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "errors.py", "io.py"], loose


def test_no_upward_or_sideways_import():
    bad = sorted(f"{src} ({layer(src)}) -> {dst} ({layer(dst)})"
                 for src, deps in imports().items() for dst in deps if not allowed(src, dst))
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


@pytest.mark.parametrize("lazy", [False, True], ids=["at-load", "lazy-too"])
def test_no_import_cycle(lazy):
    """No cycle among the imports run at module load, nor among all of them: a lazy import inside a function is
    still a dependency, and a cycle through one means two modules that cannot be understood apart."""
    graph = imports(top_level_only=not lazy)
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            pytest.fail(f"import cycle ({'lazy imports included' if lazy else 'at module load'}): "
                        + " -> ".join(cycle))


@pytest.mark.parametrize("src, dst, ok", [
    ("stelab.activations.ops", "stelab.train.loop", False),
    ("stelab.activations.ops", "stelab.weights.ops", False),  # the twins never import each other
    ("stelab.weights.ops", "stelab.activations.ops", False),
    ("stelab.weights.ops", "stelab.quant.lsq", True),
    ("stelab.quant.lsq", "stelab.weights.quantizers", False),
    ("stelab.pack.context", "stelab.activations.modules", False),
    ("stelab.network.convert", "stelab.activations.convert", True),
    ("stelab.activations.convert", "stelab.network.convert", False),
    ("stelab.ste.registry", "stelab.activations.ops", False),
    ("stelab.theory.symmetry", "stelab.activations.config", False),
    ("stelab.theory.symmetry", "stelab.io", False),
    ("stelab.theory.symmetry", "stelab.ste", True),
    ("stelab.train.loop", "stelab.diagnostics.hook", False),
    ("stelab.cli.train", "stelab.experiments.table1", True),
    ("stelab.experiments.table1", "stelab.cli.train", False),
    ("stelab.pack.saved", "stelab.train.loop", False),  # the packing is core: it knows no training
    ("stelab.train.loop", "stelab.pack", True),
    ("stelab.experiments.reproduce.table1", "stelab.executors.graph", True),
    ("stelab.executors.graph", "stelab.train.loop", False),
    ("stelab.executors.ray_executor", "stelab.experiments.reproduce.table1", False),
    ("stelab.activations.modules", "stelab.export.graph", False),
    ("stelab.weights.modules", "stelab.export.onnx_export", False),
    ("stelab.export.graph", "stelab.train.runs", False),
    ("stelab.export.graph", "stelab.weights.ops", True),
    ("stelab.cli.export", "stelab.export.verify", True),
])
def test_rules_catch_what_they_should(src, dst, ok):
    assert allowed(src, dst) is ok


MAX_FUNCTION_LINES, MAX_FILE_LINES = 60, 400


def test_functions_and_files_stay_small():
    """No function over 60 lines unless its docstring says why (a line starting "Long because"), no file over 400."""
    too_long = []
    for name, path in modules().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_FILE_LINES:
            too_long.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                reason = "Long because" in (ast.get_docstring(node) or "")
                if length > MAX_FUNCTION_LINES and not reason:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert not too_long, "split these (or give the reason in the docstring):\n" + "\n".join(too_long)
