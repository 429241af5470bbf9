"""Model lookup: the plugin's own models first, then RecBole's built-ins."""
import importlib
import importlib.util
import os
import pkgutil
import re
from functools import lru_cache
from typing import Dict, List, Tuple, Type

RECBOLE_MODEL_PACKAGES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


def _model_modules(package: str) -> Dict[str, Tuple[str, str]]:
    """Lower-case module name -> (module path, source file) for the plain modules of `package`.

    Only the package's files are listed, never imported: importing RecBole's exlib package needs lightgbm.
    """
    parent, _, child = package.rpartition(".")
    spec = importlib.util.find_spec(parent) if parent else None
    roots = [os.path.join(root, child) for root in spec.submodule_search_locations] if spec else []
    found = {}
    for info in pkgutil.iter_modules(roots):
        if not info.ispkg and not info.name.startswith("_"):
            found[info.name] = (f"{package}.{info.name}", os.path.join(info.module_finder.path, info.name + ".py"))
    return found


@lru_cache(maxsize=None)
def _registries() -> Tuple[Dict[str, Tuple[str, str]], Dict[str, Tuple[str, str]]]:
    plugin = _model_modules("recbole_milk.model")
    builtin: Dict[str, Tuple[str, str]] = {}
    for package in RECBOLE_MODEL_PACKAGES:
        for name, entry in _model_modules(f"recbole.model.{package}").items():
            builtin.setdefault(name, entry)
    return plugin, builtin


def _class_name(module_name: str, source_file: str) -> str:
    """The class in `source_file` whose name matches the module name case-insensitively (RecBole's naming rule)."""
    with open(source_file, encoding="utf-8") as handle:
        for match in re.finditer(r"^class\s+(\w+)", handle.read(), flags=re.M):
            if match.group(1).lower() == module_name:
                return match.group(1)
    return ""


def available_models() -> Dict[str, List[str]]:
    """Model class names that get_model resolves: {'plugin': [...], 'recbole': [...]}."""
    plugin, builtin = _registries()
    names = {}
    for label, registry in (("plugin", plugin), ("recbole", builtin)):
        names[label] = sorted(filter(None, (_class_name(key, path) for key, (_, path) in registry.items())))
    return names


def get_model(model_name: str) -> Type:
    """Return the model class called `model_name` (case-insensitive): plugin models first, then RecBole's."""
    key = model_name.lower()
    for registry in _registries():
        if key in registry:
            module_path, source_file = registry[key]
            class_name = _class_name(key, source_file)
            try:
                module = importlib.import_module(module_path)
            except ImportError as error:
                raise ImportError(
                    f"Model '{model_name}' needs a package that is not installed ({error}); install it first."
                ) from error
            return getattr(module, class_name)
    names = available_models()
    raise ValueError(
        f"Unknown model '{model_name}'. Plugin models: {', '.join(names['plugin']) or 'none'}. "
        f"RecBole built-ins: {', '.join(names['recbole'])}. Pass one of these names as --model=NAME."
    )
