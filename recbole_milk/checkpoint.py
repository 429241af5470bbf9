"""The plugin's checkpoint format: tensors and plain data only, so every file loads with torch's weights_only=True.

RecBole pickles its Config into checkpoints, so loading one can run code. Here the config is stored as plain data:
the options the run was given (to rebuild its Config) and the final options (to read). A file in RecBole's or an
older plugin format is refused with a message that says what to do.
"""
import json
import pickle
from typing import Any, Dict

import torch

from recbole_milk.errors import ConfigError

CHECKPOINT_FORMAT = "recbole-milk-checkpoint/2"
# Options a run resolves itself; a rebuilt Config must get the resolved value, not the user's (e.g. ~).
RESOLVED_OPTIONS = ("pretrained_cf_dir",)


def plain(value: Any) -> Any:
    """`value` as JSON-compatible data: enums, devices and other objects become strings."""
    return json.loads(json.dumps(value, default=str))


def plain_config(config: Any) -> Dict[str, Any]:
    """{model, dataset, given: the options the run was given (with resolved ones), final: every final option}."""
    # local_rank marks a process of a multi-process run: a Config rebuilt from the checkpoint is a one-process one.
    given = {key: value for key, value in config.external_config_dict.items() if key != "local_rank"}
    given.update({key: config[key] for key in RESOLVED_OPTIONS if config[key] is not None})
    return {"model": config["model"], "dataset": config["dataset"], "given": plain(given),
            "final": plain(config.final_config_dict)}


def load_checkpoint(path: str, device: Any = "cpu") -> Dict[str, Any]:
    """Load a checkpoint or resume point this plugin wrote (weights_only=True: loading runs no code)."""
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ConfigError(
            f"Checkpoint '{path}' is not in the plugin's safe format {CHECKPOINT_FORMAT}: it holds pickled objects "
            "(RecBole and recbole_milk before 0.2 pickled the Config), which are not loaded because that could run "
            "code. Retrain with this version, or load it yourself with torch.load(path, weights_only=False) if you "
            f"trust the file ({str(error).splitlines()[0]}).") from error
    except (OSError, RuntimeError, EOFError) as error:
        raise ConfigError(f"Checkpoint '{path}' cannot be read ({error}); delete it, or point at another file.") \
            from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ConfigError(f"Checkpoint '{path}' has format {found!r}, not {CHECKPOINT_FORMAT}; retrain with this "
                          "version of recbole_milk.")
    return checkpoint
