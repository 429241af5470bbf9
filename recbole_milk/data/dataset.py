"""New-item dataset: RecBole interactions plus dense modality features, availability masks and the item split.

Everything a model needs about items is computed once in __init__ and held as tensors indexed by RecBole's
internal item id (row 0 = PAD). RecBole's copy() is shallow, so the train/valid/test datasets made by build()
share these attributes with the model's `dataset` argument.
"""
import json
import math
import os
import pickle
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from recbole.data.dataset import Dataset
from recbole.utils import set_color
from recbole.utils.argument_list import dataset_arguments

from recbole_milk.atomic import atomic_write, write_json
from recbole_milk.data.features import dataset_file, load_modalities
from recbole_milk.data.missing import (
    derived_rng,
    imputation_value,
    impute,
    missing_groups,
    missing_ratios,
    read_missing_file,
    simulate_missing,
    write_missing_file,
)
from recbole_milk.data.roles import (
    ROLE_NAMES,
    ROLE_PAD,
    ROLE_TEST,
    ROLE_VALID,
    ROLE_WARM,
)
from recbole_milk.data.scopes import scope_masks, warm_holdout_pairs
from recbole_milk.errors import DataError
from recbole_milk.options import needs_warm_holdout

COLD_SPLIT = "COLD"

# Plugin options that change the built dataset; they enter the cache key (RecBole's key ignores them).
PLUGIN_DATA_OPTIONS = (
    "cold_item_ratio", "cold_valid_share", "cold_item_file", "split_seed", "modalities", "item_row_file",
    "modality_mask_files", "missing_setting", "test_missing_ratio", "train_missing_ratio", "missing_count_probs",
    "missing_file", "imputation",
)


def split_mode(config: Any) -> str:
    split = (config["eval_args"] or {}).get("split") or {}
    return next(iter(split), "")


def split_seed(config: Any) -> int:
    return int(config["seed"] if config["split_seed"] is None else config["split_seed"])


def _plugin_files(config: Any) -> Dict[str, str]:
    """Option label -> resolved path of every file the plugin reads."""
    files = {f"modalities.{name}": dataset_file(config, path) for name, path in (config["modalities"] or {}).items()}
    files.update({f"modality_mask_files.{name}": dataset_file(config, path)
                  for name, path in (config["modality_mask_files"] or {}).items()})
    for key in ("item_row_file", "cold_item_file", "missing_file"):
        if config[key] is not None:
            files[key] = dataset_file(config, config[key])
    return files


def cache_key(config: Any) -> Dict[str, Any]:
    """Everything that changes the built dataset: RecBole's dataset options, the plugin's, and the input files."""
    key = {arg: config[arg] for arg in dataset_arguments + ["seed", "repeatable", "data_path"]}
    key.update({arg: config[arg] for arg in PLUGIN_DATA_OPTIONS})
    key["split"] = (config["eval_args"] or {}).get("split")
    # Only when a scope holds warm pairs out, so that the default key (and every cache built under it) stays.
    if needs_warm_holdout(config["eval_scopes"]):
        key["warm_holdout_ratio"] = list(config["warm_holdout_ratio"])
    files = dict(_plugin_files(config), inter=os.path.join(config["data_path"], f"{config['dataset']}.inter"))
    # Size and modification time catch a regenerated file under the same name.
    key["files"] = {label: (path, os.stat(path).st_size, os.stat(path).st_mtime_ns) if os.path.exists(path) else None
                    for label, path in sorted(files.items())}
    return key


def default_cache_path(config: Any) -> str:
    return config["dataset_save_path"] or os.path.join(config["checkpoint_dir"], f"{config['dataset']}-NewItemDataset.pth")


def _round(value: float) -> int:
    return int(math.floor(value + 0.5))


class NewItemDataset(Dataset):
    """RecBole Dataset with modality features, availability, missing-modality simulation and the new-item split.

    Attributes (all indexed by internal item id; row 0 is PAD):
        modality_names: modality names in the order of config['modalities'].
        item_features: per modality a float32 (item_num, d_m) tensor, missing rows already imputed, PAD row zeros.
        item_availability: bool (item_num, M), True where the modality is present after real and simulated missingness.
        simulated_missing: bool (item_num, M), True where the simulation (or missing_file) dropped the modality.
        imputation_values: per modality the (d_m,) float32 fill value.
        item_role: long (item_num,), ROLE_PAD / ROLE_WARM / ROLE_VALID / ROLE_TEST.
        item_group: long (item_num,), number of missing modalities; item_group_names[k] names group k
            (item_groups("pattern") groups by which modalities are missing).
        warm_holdout: None, or {"valid": keys, "test": keys} of the warm (user, item) pairs held out of training
            for the warm and all scopes, as sorted user * item_num + item (recbole_milk/data/scopes.py).
    """

    def __init__(self, config: Any):
        self._check_inputs(config)
        super().__init__(config)
        self._build_item_content()
        self.warm_holdout = self._hold_out_warm_pairs()
        self.cache_key = cache_key(config)

    # ----- input checks (before any data is read) -----

    def _check_inputs(self, config: Any) -> None:
        fixes = {
            "modalities": "fix the path in 'modalities' (paths are relative to the dataset folder "
                          f"{config['data_path']})",
            "modality_mask_files": "fix the path in 'modality_mask_files', or remove the entry to take availability "
                                   "from all-NaN rows",
            "item_row_file": "fix 'item_row_file', or remove it if row r of each feature file belongs to item token r",
            "cold_item_file": "fix 'cold_item_file', or remove it to draw the split from cold_item_ratio",
            "missing_file": "fix 'missing_file', or remove it to simulate missingness from missing_setting",
        }
        self._check_inter_header(config)
        for label, path in _plugin_files(config).items():
            if not os.path.isfile(path):
                raise DataError(f"File not found: {path} (option {label}); {fixes[label.split('.')[0]]}.")
        if config["missing_file"] is not None and (config["test_missing_ratio"] is not None
                                                   or config["train_missing_ratio"] is not None):
            raise DataError("Options 'missing_file' and 'test_missing_ratio'/'train_missing_ratio' both say which items "
                            "miss modalities; keep only one of them.")
        if split_mode(config) == COLD_SPLIT and config["benchmark_filename"] is not None:
            raise DataError("Option 'benchmark_filename' fixes RecBole's own split and cannot be combined with the "
                            "new-item split eval_args.split {COLD: ~}; remove one of them (cold_item_file fixes a "
                            "new-item split).")

    @staticmethod
    def _check_inter_header(config: Any) -> None:
        # RecBole reads the header as name:type pairs and fails with a bare unpacking error when it is not one.
        path = os.path.join(config["data_path"], f"{config['dataset']}.inter")
        if not os.path.isfile(path):
            raise DataError(f"File not found: {path}; a dataset is a folder DATA_PATH/NAME/ holding NAME.inter. Check "
                            f"--dataset ({config['dataset']}) and --data_path, or convert your data with "
                            "dataset_prep/mmrec.py.")
        with open(path, encoding=config["encoding"] or "utf-8") as handle:
            header = handle.readline().rstrip("\r\n")
        columns = header.split(config["field_separator"] or "\t")
        if not header or not all(column.count(":") == 1 and all(column.split(":")) for column in columns):
            raise DataError(f"{path} must start with a RecBole header of name:type columns, such as "
                            f"user_id:token<TAB>item_id:token<TAB>timestamp:float; its first line is {header!r}.")

    # ----- item content -----

    def _build_item_content(self) -> None:
        self.item_role = self._split_items()
        self.modality_names: List[str] = list(self.config["modalities"] or {})
        features, real_available = load_modalities(self.config, self.modality_names, self._item_tokens(),
                                                   self.item_num)
        self.simulated_missing = torch.from_numpy(self._simulate_missing())
        available = real_available & ~self.simulated_missing
        available[0] = False
        self.item_availability = available

        warm = self.item_role == ROLE_WARM
        method = self.config["imputation"]
        self.imputation_values = [imputation_value(feat, available[:, m], warm, method, name)
                                  for m, (name, feat) in enumerate(zip(self.modality_names, features))]
        self.item_features = []
        for m, feat in enumerate(features):
            filled = impute(feat, available[:, m], self.imputation_values[m])
            filled[0] = 0.0
            self.item_features.append(filled)

        self.item_group, self.item_group_names = missing_groups(available, self.modality_names)
        self._log_content()

    def item_groups(self, by: str) -> Tuple[torch.Tensor, List[str]]:
        """The items' evaluation groups by missing-modality count or pattern (recbole_milk.data.missing)."""
        return missing_groups(self.item_availability, self.modality_names, by)

    def _item_tokens(self) -> np.ndarray:
        return np.asarray(self.field2id_token[self.iid_field])

    def _token_ids(self, tokens: List[Any], source: str) -> np.ndarray:
        """Internal ids of external tokens; unknown tokens are an error naming `source`."""
        lookup = self.field2token_id[self.iid_field]
        tokens = [str(token) for token in tokens]
        unknown = [token for token in tokens if token not in lookup]
        if unknown:
            raise DataError(f"{source} lists {len(unknown)} item tokens that are not in the dataset after RecBole's "
                            f"filtering (e.g. {unknown[:5]}); use tokens from {self.dataset_name}.inter, or relax the "
                            "filters (user_inter_num_interval, item_inter_num_interval).")
        return np.array([lookup[token] for token in tokens], dtype=np.int64)

    # ----- split -----

    def _split_items(self) -> torch.Tensor:
        role = torch.full((self.item_num,), ROLE_WARM, dtype=torch.long)
        role[0] = ROLE_PAD
        if split_mode(self.config) != COLD_SPLIT:
            if self.config["cold_item_file"] is not None:
                self.logger.warning("cold_item_file is ignored: eval_args.split is not {COLD: ~}, so every item is warm.")
            return role
        item_ids = self.inter_feat[self.iid_field].to_numpy()
        interacted = np.bincount(item_ids, minlength=self.item_num) > 0
        interacted[0] = False
        if self.config["cold_item_file"] is not None:
            valid, test = self._read_split_file(dataset_file(self.config, self.config["cold_item_file"]))
        else:
            candidates = np.flatnonzero(interacted)
            order = derived_rng(split_seed(self.config), "split").permutation(candidates)
            n_cold = _round(self.config["cold_item_ratio"] * len(candidates))
            n_valid = _round(self.config["cold_valid_share"] * n_cold)
            valid, test = order[:n_valid], order[n_valid:n_cold]
        role[torch.from_numpy(valid)] = ROLE_VALID
        role[torch.from_numpy(test)] = ROLE_TEST
        self._check_split(role, interacted)
        return role

    def _read_split_file(self, path: str) -> Tuple[np.ndarray, np.ndarray]:
        try:
            with open(path, encoding="utf-8") as handle:
                content = json.load(handle)
        except (OSError, json.JSONDecodeError) as error:
            raise DataError(f"cold_item_file '{path}' cannot be read as JSON ({error}); it must look like "
                            '{"valid": [tokens], "test": [tokens]} (export_split writes this format).') from error
        if not isinstance(content, dict) or not all(isinstance(content.get(k), list) for k in ("valid", "test")):
            raise DataError(f"cold_item_file '{path}' must hold lists 'valid' and 'test' of item tokens, as "
                            '{"valid": [tokens], "test": [tokens]}.')
        valid = self._token_ids(content["valid"], f"cold_item_file '{path}' ('valid')")
        test = self._token_ids(content["test"], f"cold_item_file '{path}' ('test')")
        overlap = np.intersect1d(valid, test)
        if overlap.size:
            raise DataError(f"cold_item_file '{path}' lists items both as valid and test (e.g. "
                            f"{list(self._item_tokens()[overlap[:5]])}); each new item must be in one list.")
        if isinstance(content.get("warm"), list):
            warm = self._token_ids(content["warm"], f"cold_item_file '{path}' ('warm')")
            listed = np.zeros(self.item_num, dtype=bool)
            listed[np.concatenate([warm, valid, test])] = True
            clash = np.intersect1d(warm, np.concatenate([valid, test]))
            if clash.size or not listed[1:].all():
                raise DataError(f"cold_item_file '{path}': its 'warm' list must hold exactly the dataset's items that "
                                "are neither valid nor test; remove 'warm' to let the dataset derive it.")
        return valid, test

    def _check_split(self, role: torch.Tensor, interacted: np.ndarray) -> None:
        counts = {name: int(((role == r) & torch.from_numpy(interacted)).sum()) for r, name in ROLE_NAMES.items()}
        if self.config["cold_item_file"] is not None:
            source = f"cold_item_file '{dataset_file(self.config, self.config['cold_item_file'])}'"
        else:
            source = (f"cold_item_ratio = {self.config['cold_item_ratio']} with cold_valid_share = "
                      f"{self.config['cold_valid_share']}")
        tally = (f"(of the {int(interacted.sum())} items with interactions: {counts['warm']} warm, {counts['valid']} "
                 f"valid, {counts['test']} test)")
        if counts["warm"] < 2:
            raise DataError(f"The new-item split ({source}) leaves {counts['warm']} warm item(s) {tally}; training "
                            "needs at least 2. Lower cold_item_ratio, or list fewer items in cold_item_file.")
        for name in ("valid", "test"):
            if counts[name] == 0:
                raise DataError(f"The new-item split ({source}) has no {name} items {tally}: raise cold_item_ratio "
                                "(and keep cold_valid_share away from 0 and 1), or list them in cold_item_file.")

    def _hold_out_warm_pairs(self) -> Optional[Dict[str, np.ndarray]]:
        """The warm pairs the warm and all scopes rank, held out of training; None when no scope needs them."""
        if not needs_warm_holdout(self.config["eval_scopes"]):
            return None
        inter = self.inter_feat
        holdout = warm_holdout_pairs(inter[self.uid_field].to_numpy(), inter[self.iid_field].to_numpy(), self.item_role,
                                     self.item_num, self.config["warm_holdout_ratio"],
                                     derived_rng(split_seed(self.config), "warm_holdout"))
        self.logger.info(set_color("Warm holdout", "blue") + ": " + ", ".join(
            f"{keys.size} {phase} pairs" for phase, keys in holdout.items()) + " of warm items out of training")
        return holdout

    def export_split(self, path: str) -> None:
        """Write the split in use as {"warm": [tokens], "valid": [...], "test": [...]} (cold_item_file format)."""
        tokens = self._item_tokens()
        content = {name: tokens[(self.item_role == r).numpy()].tolist() for r, name in ROLE_NAMES.items()}
        write_json(path, content)

    # ----- features -----

    # ----- missing-modality simulation -----

    def _simulate_missing(self) -> np.ndarray:
        n_modalities = len(self.modality_names)
        dropped = np.zeros((self.item_num, n_modalities), dtype=bool)
        if not n_modalities:
            return dropped
        setting = self.config["missing_setting"]
        role = self.item_role.numpy()
        new_ids = np.flatnonzero((role == ROLE_VALID) | (role == ROLE_TEST))
        warm_ids = np.flatnonzero(role == ROLE_WARM)
        if self.config["missing_file"] is not None:
            path = dataset_file(self.config, self.config["missing_file"])
            parts = read_missing_file(path, self.modality_names)
            use = {"FTFT": (), "FTMT": ("test_missing",), "MTMT": ("test_missing", "train_missing")}[setting]
            for part in use:
                ids = self._token_ids(list(parts[part]), f"missing_file '{path}' ('{part}')")
                for item_id, modalities in zip(ids, parts[part].values()):
                    dropped[item_id, modalities] = True
            return dropped
        test_ratio, train_ratio = missing_ratios(setting, self.config["test_missing_ratio"],
                                                 self.config["train_missing_ratio"])
        seed, probs = split_seed(self.config), self.config["missing_count_probs"]
        # Separate streams: FTMT and MTMT share the test masks, and no mask moves the split.
        dropped[new_ids] = simulate_missing(len(new_ids), n_modalities, test_ratio, derived_rng(seed, "test_missing"), probs)
        dropped[warm_ids] = simulate_missing(len(warm_ids), n_modalities, train_ratio,
                                             derived_rng(seed, "train_missing"), probs)
        return dropped

    def export_missing(self, path: str) -> None:
        """Write the simulated missingness in missing_file format: new items under test_missing, warm under train_missing."""
        tokens = self._item_tokens()
        dropped = self.simulated_missing.numpy()
        role = self.item_role.numpy()
        parts = {}
        for part, ids in (("test_missing", np.flatnonzero(role >= ROLE_VALID)),
                          ("train_missing", np.flatnonzero(role == ROLE_WARM))):
            ids = ids[dropped[ids].any(axis=1)]
            parts[part] = {tokens[i]: dropped[i] for i in ids}
        write_missing_file(path, self.modality_names, parts)

    def _log_content(self) -> None:
        roles = {name: int((self.item_role == r).sum()) for r, name in ROLE_NAMES.items()}
        groups = torch.bincount(self.item_group[1:], minlength=len(self.item_group_names)).tolist()
        self.logger.info(set_color("Items", "blue") + f": {roles}; modalities {self.modality_names}; missing groups "
                         + str(dict(zip(self.item_group_names, groups))))

    # ----- RecBole hooks -----

    def _load_data(self, token: str, dataset_path: str) -> None:
        super()._load_data(token, dataset_path)
        self._loaded_inter_count = 0 if self.inter_feat is None else len(self.inter_feat)

    def _reset_index(self) -> None:
        # RecBole only says "Some feat is empty"; say which file and why, before any feature is read.
        if self.inter_feat is not None and self.inter_feat.empty:
            path = os.path.join(self.dataset_path, f"{self.dataset_name}.inter")
            if not self._loaded_inter_count:
                raise DataError(f"{path} holds no interactions: add one line per interaction (user<TAB>item...) "
                                "below its header.")
            raise DataError(
                f"RecBole's filters removed all {self._loaded_inter_count} interactions of {path} (val_interval = "
                f"{self.config['val_interval']}, user_inter_num_interval = {self.config['user_inter_num_interval']}, "
                f"item_inter_num_interval = {self.config['item_inter_num_interval']}, filter_inter_by_user_or_item = "
                f"{self.config['filter_inter_by_user_or_item']}); relax them.")
        super()._reset_index()

    def build(self) -> List[Dataset]:
        """COLD: train/valid/test hold the interactions of warm (less the warm holdout), valid and test items.
        Other splits: RecBole's."""
        if split_mode(self.config) != COLD_SPLIT:
            return super().build()
        train, scopes = self.build_scopes()
        return [train, *scopes["new"]]

    def build_scopes(self) -> Tuple[Dataset, Dict[str, Tuple[Dataset, Dataset]]]:
        """COLD split: (train, {scope: (valid, test)}), the interactions of recbole_milk.data.scopes.scope_masks."""
        self._change_feat_format()
        self._drop_unused_col()
        train, parts = scope_masks(self.inter_feat[self.uid_field], self.inter_feat[self.iid_field], self.item_role,
                                   self.item_num, self.warm_holdout)

        def subset(mask: torch.Tensor) -> Dataset:
            return self.copy(self.inter_feat[torch.nonzero(mask).squeeze(1)])

        return subset(train), {scope: (subset(parts[scope, "valid"]), subset(parts[scope, "test"]))
                               for scope in dict.fromkeys(scope for scope, _ in parts)}

    def save(self, path: Optional[str] = None) -> None:
        """Pickle this dataset to `path` (default: the cache path) via a temporary file and a rename."""
        target = Path(path or default_cache_path(self.config))
        self.logger.info(set_color("Saving filtered dataset into ", "pink") + f"[{target}]")
        with atomic_write(target) as handle:
            pickle.dump(self, handle)

    def __str__(self) -> str:
        roles = {name: int((self.item_role == r).sum()) for r, name in ROLE_NAMES.items()}
        dims = [feat.shape[1] for feat in self.item_features]
        return (super().__str__() + "\n" + set_color("Item split", "blue") + f": {roles}\n"
                + set_color("Modalities", "blue") + f": {dict(zip(self.modality_names, dims))}")
