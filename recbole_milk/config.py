"""Config subclass that layers the plugin's yaml defaults between RecBole's and the user's."""
import os
from pathlib import Path
from typing import Any, List, Optional

from recbole.config import Config as RecBoleConfig

from recbole_milk import distributed
from recbole_milk.compat import apply_numpy_aliases
from recbole_milk.errors import ConfigError
from recbole_milk.options import process_count, validate_options
from recbole_milk.utils import get_model

PLUGIN_CATEGORY = "recbole-milk"
# Folders of properties/ that hold defaults, not presets.
NOT_PRESETS = ("model", "dataset", "hyper")
EMBEDDED_DATASETS = ("ml-100k-mm",)


def properties_dir() -> Path:
    """The plugin's yaml defaults: the source tree's `properties/`, else the installed package data."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "properties", package_dir.parent / "properties"):
        if (candidate / "overall.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"recbole_milk cannot find its yaml defaults (properties/overall.yaml) next to {package_dir}; "
        "reinstall the package with `pip install .`"
    )


def default_cache_dir() -> Path:
    """Where embedded datasets are built when the user gives no data_path."""
    root = os.environ.get("RECBOLE_MILK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "recbole_milk"
    )
    return Path(root)


class Config(RecBoleConfig):
    """RecBole Config with priority RecBole defaults < plugin overall < plugin model (its bases' yaml, then its own)
    < plugin dataset < DATA_PATH/<dataset>/<dataset>.yaml (written by dataset_prep converters) < the `preset` named
    by the user (properties/<preset>/<Model>.yaml, then <Model>-<dataset>.yaml) < user.

    The user's config files, config_dict and command line keep RecBole's own order among themselves.
    `model` may be a plugin model name, a RecBole built-in name, or a model class.
    """

    def __init__(
        self,
        model: Any = None,
        dataset: Optional[str] = None,
        config_file_list: Optional[list] = None,
        config_dict: Optional[dict] = None,
    ):
        super().__init__(model, dataset, config_file_list, config_dict)
        validate_options(self.final_config_dict, self.model_class)

    def compatibility_settings(self) -> None:
        apply_numpy_aliases()

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
        if isinstance(model, str):
            model_class = get_model(model)
            _, _, final_dataset = super()._get_model_and_dataset(model_class, dataset)
            return model_class.__name__, model_class, final_dataset
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        root = properties_dir()
        self.plugin_keys = []
        # A plugin model's bases declare the options they own (ContentRecommender.yaml, TwoStageRecommender.yaml),
        # so each option has one default, however many models share it.
        classes = [cls.__name__ for cls in reversed(getattr(model_class, "__mro__", ()))]
        model_layers = [root / "model" / f"{name}.yaml" for name in dict.fromkeys(classes + [model])]
        layers = [root / "overall.yaml", *model_layers, root / "dataset" / f"{dataset}.yaml"]
        for path in layers:
            if path.is_file():
                loaded = self._update_internal_config_dict(str(path)) or {}
                self.plugin_keys += [key for key in loaded if key not in self.plugin_keys]
        # A converted dataset carries its own <name>.yaml (modalities, load_col): it sits above the plugin's yaml.
        data_path = self.external_config_dict.get("data_path") or self.internal_config_dict.get("data_path")
        if data_path:
            folder_yaml = Path(data_path) / dataset / f"{dataset}.yaml"
            if folder_yaml.is_file():
                loaded = self._update_internal_config_dict(str(folder_yaml)) or {}
                self.plugin_keys += [key for key in loaded if key not in self.plugin_keys]
        for path in self._preset_files(root, model, dataset):
            loaded = self._update_internal_config_dict(str(path)) or {}
            self.plugin_keys += [key for key in loaded if key not in self.plugin_keys]
        self.parameters[PLUGIN_CATEGORY] = [
            key for key in self.plugin_keys if not any(key in keys for keys in self.parameters.values())
        ]

    def _preset_files(self, root: Path, model: str, dataset: str) -> List[Path]:
        """The yaml files of the `preset` option: <preset>/<Model>.yaml, then <preset>/<Model>-<dataset>.yaml."""
        preset = self.external_config_dict.get("preset")
        if preset is None:
            return []
        known = sorted(path.name for path in root.iterdir() if path.is_dir() and path.name not in NOT_PRESETS)
        folder = root / str(preset)
        files = [folder / f"{model}.yaml", folder / f"{model}-{dataset}.yaml"]
        if str(preset) not in known or not files[0].is_file():
            offered = [name for name in known if (root / name / f"{model}.yaml").is_file()]
            raise ConfigError(f"Option 'preset' = {preset!r} is invalid for model {model}: it must be one of "
                              f"{offered or 'none (no preset covers this model)'}, or ~. A preset is a folder of "
                              f"yaml files in {root}.")
        return [path for path in files if path.is_file()]

    def _init_device(self):
        """RecBole's device set-up; in a process of a multi-process run (the launcher gives it `local_rank`, RecBole's
        convention) the process joins the run's process group on its own device, with gloo or nccl.

        `single_spec` stays True there, which keeps RecBole's own DistributedDataParallel path off: the plugin shares
        out batches, averages gradients and gathers evaluation itself (recbole_milk.distributed)."""
        options = self.final_config_dict
        if "local_rank" not in options:
            super()._init_device()
            return
        gpu_id = ",".join(map(str, options["gpu_id"])) if isinstance(options["gpu_id"], tuple) \
            else str(options["gpu_id"])
        options["gpu_id"] = gpu_id
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
        import torch

        local_rank = int(options["local_rank"])
        cuda = len(gpu_id) > 0 and torch.cuda.is_available()
        device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        size = process_count(options)
        backend = distributed.resolve_backend(options.get("ddp_backend") or "auto", device)
        distributed.init_process_group(backend, local_rank + int(options.get("offset") or 0), size,
                                       str(options.get("ip") or "localhost"), int(options["port"]),
                                       float(options.get("ddp_timeout") or 1800))
        options.update(device=device, single_spec=True, world_size=size, ddp_backend=backend)
        if not distributed.is_writer():  # one process talks: the others log errors only
            options.update(state="error", show_progress=False)

    def _set_default_parameters(self):
        if self.dataset in EMBEDDED_DATASETS and "data_path" not in self.external_config_dict:
            self.final_config_dict["data_path"] = str(default_cache_dir())
        super()._set_default_parameters()

