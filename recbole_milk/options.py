"""Checks of the plugin's options, run once, when the Config is built, before any data is read.

Defaults are declared in properties/ (overall.yaml, model/<Base or Model>.yaml); the rules here say which values
are allowed. Models declare the rules of their own options as the class attribute `option_rules`, and options
that constrain each other in the classmethod `check_options`.
"""
import math
import os
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from recbole.utils import ModelType

from recbole_milk.errors import ConfigError

Rule = Tuple[Callable[[Any], bool], str]
OptionRules = Dict[str, Rule]


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def in_range(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Rule:
    def check(value: Any) -> bool:
        number = _number(value)
        if number is None or math.isnan(number):
            return False
        above = number > low if low_open else number >= low
        below = number < high if high_open else number <= high
        return above and below
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    return check, f"a number in {left}{low}, {high}{right}"


def one_of(*choices: str) -> Rule:
    return (lambda value: value in choices), "one of " + ", ".join(choices)


def positive_int() -> Rule:
    return (lambda value: isinstance(value, int) and not isinstance(value, bool) and value > 0), "an integer > 0"


def optional(rule: Rule) -> Rule:
    check, allowed = rule
    return (lambda value: value is None or check(value)), allowed + " (or ~ for the default)"


def non_negative_int() -> Rule:
    return (lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= 0), "an integer >= 0"


def existing_folder_or_none() -> Rule:
    return ((lambda value: value is None or (isinstance(value, str) and os.path.isdir(value))),
            "an existing folder, or ~")


NON_NEGATIVE = in_range(0.0, math.inf, high_open=True)
POSITIVE = in_range(0.0, math.inf, low_open=True, high_open=True)
RATIO = in_range(0.0, 1.0, high_open=True)
SHARE = in_range(0.0, 1.0)
BOOLEAN: Rule = ((lambda value: isinstance(value, bool)), "true or false")
HIDDEN_SIZES: Rule = (
    lambda value: isinstance(value, list)
    and all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in value),
    "a list of positive integers (hidden layer sizes; [] for a single affine layer)",
)

# Rankings a run can report (recbole_milk/data/scopes.py); warm and all need the warm holdout.
EVAL_SCOPES = ("new", "warm", "all")


def needs_warm_holdout(scopes: Optional[Sequence[str]]) -> bool:
    """True when a scope ranks held-out warm interactions (warm, all)."""
    return any(scope != "new" for scope in scopes or ())


# RecBole metrics of the top-K lists themselves, not of their hits: the plugin computes them over the candidates of
# each scope (recbole_milk/evaluation.py), from full rankings.
LIST_METRICS = ("itemcoverage", "averagepopularity", "giniindex", "tailpercentage")

# How evaluation groups items for its per-group metrics (recbole_milk.data.missing.missing_groups).
ITEM_GROUPINGS = ("count", "pattern")

# Options shared by every model the plugin runs.
COMMON_RULES: OptionRules = {
    "cold_item_ratio": in_range(0.0, 1.0, low_open=True, high_open=True),
    "cold_valid_share": in_range(0.0, 1.0, low_open=True, high_open=True),
    "candidate_pool": one_of("all_new", "split_new"),
    "missing_setting": one_of("FTFT", "FTMT", "MTMT"),
    "test_missing_ratio": optional(in_range(0.0, 1.0)),
    "train_missing_ratio": optional(RATIO),
    "imputation": one_of("mean", "zero"),
    "item_groups": one_of(*ITEM_GROUPINGS),
    "epochs": positive_int(),
    "nproc": positive_int(),
    "world_size": ((lambda value: isinstance(value, int) and not isinstance(value, bool) and (value == -1 or value > 0)),
                   "-1 (the same as nproc) or an integer > 0"),
    "offset": non_negative_int(),
    "ip": ((lambda value: isinstance(value, str) and bool(value)), "a host name or address"),
    "port": optional(((lambda value: isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536),
                      "a TCP port number")),
    "ddp_backend": one_of("auto", "gloo", "nccl"),
    "ddp_timeout": positive_int(),
}


def process_count(config: Dict[str, Any]) -> int:
    """The number of processes of the run on all machines (`world_size`, or `nproc` when it is -1)."""
    nproc, size = config.get("nproc") or 1, config.get("world_size", -1)
    return nproc if size in (None, -1) else size


def _check_processes(config: Dict[str, Any]) -> None:
    size, nproc, offset = process_count(config), config.get("nproc") or 1, config.get("offset") or 0
    if offset + nproc > size:
        raise ConfigError(f"Options 'nproc' = {nproc}, 'offset' = {offset} and 'world_size' = {size} do not fit: this "
                          "machine's processes get the global ranks offset .. offset + nproc - 1, which must be below "
                          "world_size; lower nproc or offset, or raise world_size.")
    if size == 1:
        return
    owner = f"with world_size {size} (nproc {nproc})"
    if config.get("MODEL_TYPE") not in (ModelType.GENERAL, ModelType.TRADITIONAL):
        raise ConfigError(f"Option 'nproc' > 1 is invalid for model {config.get('model')} ({config.get('MODEL_TYPE')}):"
                          " several processes train general recommenders only (MILK, the plugin's baselines and "
                          "RecBole's general models); set nproc: 1.")
    cuda = getattr(config.get("device"), "type", None) == "cuda"
    if config.get("ddp_backend") == "nccl" and not cuda:
        raise ConfigError(f"Option 'ddp_backend' = 'nccl' is invalid {owner}: nccl needs CUDA devices and this run is "
                          "on the CPU (no GPU visible, or gpu_id is empty); use ddp_backend: gloo or auto.")
    if cuda and torch.cuda.device_count() < nproc:
        raise ConfigError(f"Option 'nproc' = {nproc} needs {nproc} GPUs on this machine (one per process), but "
                          f"{torch.cuda.device_count()} are visible with gpu_id = {config.get('gpu_id')!r}; list "
                          f"{nproc} GPUs in gpu_id, e.g. --gpu_id=0,1, or lower nproc.")
    if size > nproc and config.get("port") is None:
        raise ConfigError(f"Option 'port' = ~ is invalid {owner}: a run over several machines needs the same fixed "
                          "port on every machine (with ip, the address of the machine of rank 0); set port.")
    if config.get("enable_scaler"):
        raise ConfigError(f"Option 'enable_scaler' = True is invalid {owner}: the gradient scaler may skip a step in "
                          "one process and not in another; set enable_scaler: False.")


def _check_resume(config: Dict[str, Any]) -> None:
    value = config.get("resume_from")
    if value is None or value == "latest":
        return
    if not isinstance(value, str) or not os.path.isfile(value):
        raise ConfigError(
            f"Option 'resume_from' = {value!r} is invalid: it must be ~ (start clean), latest (the newest unfinished "
            "run with the same options in checkpoint_dir) or the path of an existing checkpoint file.")


def _check_modality_count(config: Dict[str, Any], model_class: Any) -> None:
    # A model that fuses modalities declares how many it needs as the class attribute `min_modalities`.
    needed = getattr(model_class, "min_modalities", 0)
    modalities = config.get("modalities") or {}
    if needed and "modalities" in config and len(modalities) < needed:
        raise ConfigError(
            f"Option 'modalities' = {config.get('modalities')!r} is invalid for model {model_class.__name__}: it must "
            f"map at least {needed} modality names to feature files (it has {len(modalities)}); add feature files, "
            "or use a single-modality content model.")


def _check(config: Dict[str, Any], rules: OptionRules, owner: str) -> None:
    for key, (check, allowed) in rules.items():
        if key in config and not check(config[key]):
            raise ConfigError(f"Option '{key}' = {config[key]!r} is invalid{owner}: it must be {allowed}.")


def _check_probabilities(config: Dict[str, Any]) -> None:
    probs = config.get("missing_count_probs")
    if probs is None:
        return
    valid = isinstance(probs, (list, tuple)) and len(probs) > 0 and all(
        _number(p) is not None and _number(p) >= 0 for p in probs)
    if not valid or abs(sum(probs) - 1.0) > 1e-6:
        raise ConfigError(
            f"Option 'missing_count_probs' = {probs!r} is invalid: it must be a list of non-negative numbers "
            "summing to 1, P(miss 1 modality), P(miss 2), ..., for example [0.5, 0.5].")
    modalities = config.get("modalities") or {}
    if modalities and len(probs) > len(modalities):
        raise ConfigError(
            f"Option 'missing_count_probs' = {probs} gives probabilities for up to {len(probs)} missing modalities, "
            f"but 'modalities' has {len(modalities)}; give at most {len(modalities)} entries.")


def _check_modalities(config: Dict[str, Any]) -> None:
    modalities = config.get("modalities")
    if modalities is None:
        return
    if not isinstance(modalities, dict) or not modalities or not all(
            isinstance(name, str) and isinstance(path, str) for name, path in modalities.items()):
        raise ConfigError(
            f"Option 'modalities' = {modalities!r} is invalid: it must map modality names to feature files, "
            "for example {visual: image_feat.npy, acoustic: audio_feat.npy}.")
    masks = config.get("modality_mask_files") or {}
    unknown = sorted(set(masks) - set(modalities))
    if unknown:
        raise ConfigError(
            f"Option 'modality_mask_files' names modalities {unknown} that are not in 'modalities' "
            f"({sorted(modalities)}); use the same names in both.")


def _full_ranking(config: Dict[str, Any]) -> bool:
    mode = (config.get("eval_args") or {}).get("mode", "full")
    return set(mode.values() if isinstance(mode, dict) else [mode]) == {"full"}


def _check_scopes(config: Dict[str, Any]) -> None:
    scopes = config.get("eval_scopes")
    if "eval_scopes" in config and not (isinstance(scopes, list) and scopes and len(set(scopes)) == len(scopes)
                                        and all(scope in EVAL_SCOPES for scope in scopes)):
        raise ConfigError(
            f"Option 'eval_scopes' = {scopes!r} is invalid: it must be a non-empty list of distinct scopes from "
            f"{', '.join(EVAL_SCOPES)} (the first gives the valid metric), for example [new, warm, all] in yaml, "
            "--eval_scopes=\"['new','warm','all']\" on the command line.")
    ratios = config.get("warm_holdout_ratio")
    if "warm_holdout_ratio" in config and not (
            isinstance(ratios, (list, tuple)) and len(ratios) == 2
            and all(_number(r) is not None and 0 < r < 1 for r in ratios) and sum(ratios) < 1):
        raise ConfigError(
            f"Option 'warm_holdout_ratio' = {ratios!r} is invalid: it must be [valid share, test share] of each "
            "user's warm interactions, two numbers in (0, 1) summing to less than 1, for example [0.1, 0.1].")
    if not needs_warm_holdout(scopes):
        return
    split = next(iter((config.get("eval_args") or {}).get("split") or {}), None)
    if split != "COLD":
        raise ConfigError(
            f"Option 'eval_scopes' = {scopes} is invalid with eval_args.split {split}: warm and all need the new-item "
            "split eval_args.split {COLD: ~}; under RecBole's RS, LS or TS split every item is warm and the new "
            "scope already ranks them all, so use eval_scopes: [new].")
    if not _full_ranking(config):
        raise ConfigError(
            f"Option 'eval_scopes' = {scopes} is invalid with eval_args.mode {config['eval_args']['mode']}: warm "
            "and all rank every candidate item, so they need full ranking; set eval_args.mode: full, or use "
            "eval_scopes: [new].")


def _check_list_metrics(config: Dict[str, Any]) -> None:
    asked = [metric for metric in config.get("metrics") or () if str(metric).lower() in LIST_METRICS]
    if asked and not _full_ranking(config):
        raise ConfigError(
            f"Option 'metrics' lists {asked}, which the plugin computes over each scope's candidates from full "
            f"rankings, but eval_args.mode is {config['eval_args']['mode']}; set eval_args.mode: full, or remove "
            "them.")


def validate_options(config: Dict[str, Any], model_class: Any = None) -> None:
    """Raise ConfigError for the first invalid plugin option in `config`."""
    _check(config, COMMON_RULES, "")
    _check_processes(config)
    _check_scopes(config)
    _check_list_metrics(config)
    _check_probabilities(config)
    _check_modalities(config)
    _check_resume(config)
    _check_modality_count(config, model_class)
    model_rules = getattr(model_class, "option_rules", None)
    if model_rules:
        _check(config, model_rules, f" for model {model_class.__name__}")
    check_options = getattr(model_class, "check_options", None)
    if callable(check_options):
        check_options(config)
