"""The house stays sound: small modules, imports that only flow downward through the layers, no import cycle."""
import ast
from pathlib import Path
from typing import Dict, Set

PACKAGE = Path(__file__).resolve().parents[1] / "recbole_milk"
MAX_LINES = 400
# Lower layers never import higher ones (docs/architecture.md): shared helpers, then data, then models, then model
# lookup and configuration, then training, evaluation and serving, then the entry points.
LAYERS = [
    ("errors", "atomic", "compat", "options", "distributed", "launch", "logger", "cli"),
    ("data", "pretrained"),
    ("model",),
    ("utils", "config", "option_docs"),
    ("evaluation", "optim", "checkpoint", "resume", "parallel_trainer", "ranking", "trainer", "calibration",
     "inference"),
    ("stage_one", "quick_start", "parallel_tuning", "integration", "search", "item_store", "service", "http_api",
     "serve"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    first = module.split(".")[1] if "." in module else ""
    for index, names in enumerate(LAYERS):
        if first in names:
            return index
    raise AssertionError(f"{module} is in no layer of test_architecture.LAYERS; add it where it belongs")


def imports() -> Dict[str, Set[str]]:
    """Module -> the recbole_milk modules it imports, anywhere in its code (module and function level)."""
    graph = {}
    modules = {module_name(path) for path in PACKAGE.rglob("*.py")}
    for path in PACKAGE.rglob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recbole_milk"):
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    found.add(candidate if candidate in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name.startswith("recbole_milk"))
        graph[module_name(path)] = {name for name in found if name != "recbole_milk"}
    return graph


def test_no_module_is_over_400_lines():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules: {long}"


def test_imports_only_flow_down_the_layers():
    upward = [(module, target) for module, targets in imports().items() for target in targets
              if module != "recbole_milk" and layer_of(target) > layer_of(module)]
    assert not upward, f"imports that run back up: {upward}"


def test_no_import_cycle():
    graph = imports()
    state: Dict[str, int] = {}

    def visit(module: str, path: list) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(target):] + [target])
                                     if target in path else f"import cycle through {target}")
            if state.get(target) is None:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if state.get(module) is None:
            visit(module, [module])


def test_every_subpackage_is_listed_in_setup_cfg():
    # setup.cfg names its packages explicitly; a subpackage missing there works in an editable install and is
    # absent from a regular one, which is how CI installs.
    import configparser

    parser = configparser.ConfigParser()
    parser.read(PACKAGE.parent / "setup.cfg")
    listed = set(parser["options"]["packages"].split())
    present = {module_name(path) for path in PACKAGE.rglob("__init__.py")}
    assert present - listed == set(), "add these to [options] packages in setup.cfg"
