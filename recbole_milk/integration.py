"""Opt-in hook that points RecBole's own quick-start functions at the plugin (models, data pipeline, trainer)."""
import importlib
from typing import Dict, Tuple

_ORIGINALS: Dict[Tuple[str, str], object] = {}


def _replacements() -> Dict[Tuple[str, str], object]:
    from recbole_milk import quick_start
    from recbole_milk.config import Config
    from recbole_milk.data.utils import create_dataset, data_preparation
    from recbole_milk.logger import init_logger
    from recbole_milk.trainer import get_trainer
    from recbole_milk.utils import get_model

    module = "recbole.quick_start.quick_start"
    return {
        (module, "Config"): Config,
        (module, "create_dataset"): create_dataset,
        (module, "data_preparation"): data_preparation,
        (module, "get_model"): get_model,
        (module, "get_trainer"): get_trainer,
        (module, "init_logger"): init_logger,
        (module, "load_data_and_model"): quick_start.load_data_and_model,
        ("recbole.quick_start", "load_data_and_model"): quick_start.load_data_and_model,
    }


def register() -> None:
    """Make `recbole.quick_start.run_recbole(model='MILK', ...)`, RecBole's objective_function (run_hyper.py) and
    load_data_and_model use the plugin's models, Config, new-item data pipeline and trainer.

    Importing recbole_milk changes nothing in RecBole; only this call does. `unregister()` undoes it.
    """
    from recbole_milk.compat import apply_numpy_aliases

    apply_numpy_aliases()
    for (module_name, attribute), replacement in _replacements().items():
        module = importlib.import_module(module_name)
        _ORIGINALS.setdefault((module_name, attribute), getattr(module, attribute))
        setattr(module, attribute, replacement)


def unregister() -> None:
    """Restore RecBole's own functions."""
    for (module_name, attribute), original in _ORIGINALS.items():
        setattr(importlib.import_module(module_name), attribute, original)
    _ORIGINALS.clear()
