"""Model lookup: the plugin's registry first, then RecBole's built-ins."""
import importlib
import importlib.util
import inspect
import pkgutil
from functools import lru_cache
from typing import Dict, List, Optional, Type

import torch

from recbole_milk.errors import UnknownModelError

# RecBole's model packages whose __init__ imports every model class. exlib_recommender is imported only when one of
# its models is asked for: importing it needs lightgbm and xgboost.
RECBOLE_MODEL_PACKAGES = (
    "general_recommender",
    "context_aware_recommender",
    "knowledge_aware_recommender",
    "sequential_recommender",
)
EXLIB_PACKAGE = "recbole.model.exlib_recommender"


@lru_cache(maxsize=None)
def _plugin_models() -> Dict[str, Type]:
    from recbole_milk.model.registry import PLUGIN_MODELS

    return {name.lower(): model for name, model in PLUGIN_MODELS.items()}


@lru_cache(maxsize=None)
def _recbole_package_models(package: str) -> Dict[str, Type]:
    """Lower-case name -> class of the models in one of RecBole's model packages (imported on first use)."""
    from recbole.model.abstract_recommender import AbstractRecommender

    # RecBole's sequential_recommender/sine.py turns on autograd anomaly detection when imported, which slows every
    # later training step several-fold; a lookup must not change it.
    anomaly = torch.is_anomaly_enabled()
    try:
        module = importlib.import_module(f"recbole.model.{package}")
    finally:
        torch.autograd.set_detect_anomaly(anomaly)
    return {name.lower(): value for name, value in vars(module).items()
            if inspect.isclass(value) and issubclass(value, AbstractRecommender)
            and value.__module__.startswith(f"recbole.model.{package}.")}


def _recbole_model(key: str) -> Optional[Type]:
    """A RecBole built-in by lower-case name, importing its packages one at a time, most used first."""
    for package in RECBOLE_MODEL_PACKAGES:
        found = _recbole_package_models(package).get(key)
        if found is not None:
            return found
    return None


def available_models() -> Dict[str, List[str]]:
    """Model class names that get_model resolves: {'plugin': [...], 'recbole': [...]}."""
    recbole = {model.__name__ for package in RECBOLE_MODEL_PACKAGES
               for model in _recbole_package_models(package).values()}
    return {"plugin": sorted(model.__name__ for model in _plugin_models().values()), "recbole": sorted(recbole)}


def _exlib_model(key: str, model_name: str) -> Optional[Type]:
    """A model of RecBole's exlib_recommender (LightGBM, XGBoost), if `key` names one of its modules."""
    spec = importlib.util.find_spec(EXLIB_PACKAGE)
    names = {info.name for info in pkgutil.iter_modules(spec.submodule_search_locations)} if spec else set()
    if key not in names:
        return None
    try:
        module = importlib.import_module(f"{EXLIB_PACKAGE}.{key}")
    except ImportError as error:
        raise UnknownModelError(f"Model '{model_name}' needs a package that is not installed ({error}); install it "
                                "first.") from error
    return next(value for name, value in vars(module).items() if name.lower() == key and inspect.isclass(value))


def get_model(model_name: str) -> Type:
    """Return the model class called `model_name` (case-insensitive): plugin models first, then RecBole's."""
    key = str(model_name).lower()
    found = _plugin_models().get(key) or _recbole_model(key) or _exlib_model(key, model_name)
    if found is not None:
        return found
    names = available_models()
    raise UnknownModelError(
        f"Unknown model '{model_name}'. Plugin models: {', '.join(names['plugin'])}. "
        f"RecBole built-ins: {', '.join(names['recbole'])}. Pass one of these names as --model=NAME.")
