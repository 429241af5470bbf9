"""create_dataset() and data_preparation() for the plugin: RecBole's, with the new-item dataset, warm-only
negatives, candidate-restricted evaluation and a dataset cache keyed on every option that changes the data."""
import os
import pickle
from logging import getLogger
from typing import Any, Dict, Tuple

import torch
from recbole.data import create_dataset as recbole_create_dataset
from recbole.data import data_preparation as recbole_data_preparation
from recbole.data.dataloader import TrainDataLoader
from recbole.data.utils import get_dataloader
from recbole.utils import ModelType, set_color

from recbole_milk import distributed
from recbole_milk.atomic import remove_stale_temporaries
from recbole_milk.data.dataloader import NewItemFullSortEvalDataLoader
from recbole_milk.data.dataset import (
    COLD_SPLIT,
    NewItemDataset,
    cache_key,
    default_cache_path,
    split_mode,
)
from recbole_milk.data.epoch_negatives import with_epoch_negatives
from recbole_milk.data.sampler import WarmItemSampler
from recbole_milk.data.shards import sharded
from recbole_milk.errors import DataError

PHASES = ("train", "valid", "test")


def create_dataset(config: Any) -> Any:
    """NewItemDataset for general models (from the cache when its key matches); RecBole's dataset otherwise.

    In a multi-process run rank 0 builds (and caches) it first; the others follow once it is done."""
    # Pop, ItemKNN, EASE and Random are general recommenders too, typed TRADITIONAL for their training loop.
    if config["MODEL_TYPE"] not in (ModelType.GENERAL, ModelType.TRADITIONAL):
        return recbole_create_dataset(config)
    with distributed.writer_first():
        return _new_item_dataset(config)


def _new_item_dataset(config: Any) -> NewItemDataset:
    if config["dataset"] == "ml-100k-mm":
        from recbole_milk.data.embedded import ensure_embedded_dataset
        ensure_embedded_dataset(config)
    logger = getLogger()
    path = default_cache_path(config)
    remove_stale_temporaries(os.path.dirname(os.path.abspath(path)))
    if os.path.exists(path):
        try:
            with open(path, "rb") as handle:
                dataset = pickle.load(handle)
        except Exception as error:  # any unpickling failure means the cache is unusable, never that the data is
            logger.warning(f"Dataset cache {path} cannot be read ({type(error).__name__}: {error}); rebuilding it.")
            dataset = None
        if isinstance(dataset, NewItemDataset) and getattr(dataset, "cache_key", None) == cache_key(config):
            logger.info(set_color("Load filtered dataset from", "pink") + f": [{path}]")
            # Options outside the key (e.g. candidate_pool, split_export_file) must come from this run.
            dataset.config = config
            return dataset
    dataset = NewItemDataset(config)
    if config["save_dataset"] and distributed.is_writer():
        dataset.save(path)
    return dataset


def create_samplers(config: Any, dataset: NewItemDataset, built_datasets: list) -> Tuple[Any, Any, Any]:
    """One WarmItemSampler per phase (None where the phase draws no negatives), sharing the used-item tables."""
    distributions = [config[f"{phase}_neg_sample_args"]["distribution"] for phase in PHASES]
    needed = [d for d in distributions if d != "none"]
    if not needed:
        return None, None, None
    alpha = config["train_neg_sample_args"]["alpha"]
    base = WarmItemSampler(list(PHASES), built_datasets, needed[0],
                           1.0 if alpha in (None, "none") else alpha, config["candidate_pool"])
    samplers = []
    for phase, distribution in zip(PHASES, distributions):
        if distribution == "none":
            samplers.append(None)
            continue
        sampler = base.set_phase(phase)
        sampler.set_distribution(distribution)
        samplers.append(sampler)
    return tuple(samplers)


def data_preparation(config: Any, dataset: Any) -> Tuple[Any, Any, Any]:
    """Split `dataset` and return (train, valid, test) dataloaders; valid and test are those of the first of
    `eval_scopes`, the scope model selection reads (scoped_data_preparation has the others).

    Training keeps RecBole's loader for the model (AE models get UserDataLoader) with negatives from warm items.
    Full-sort evaluation uses NewItemFullSortEvalDataLoader, which ranks only the scope's candidate items.
    """
    if not isinstance(dataset, NewItemDataset):
        return recbole_data_preparation(config, dataset)
    train_data, scopes = scoped_data_preparation(config, dataset)
    return (train_data, *scopes[config["eval_scopes"][0]])


def scoped_data_preparation(config: Any, dataset: NewItemDataset) -> Tuple[Any, Dict[str, Tuple[Any, Any]]]:
    """(train loader, {scope: (valid loader, test loader)}) for every scope of `eval_scopes`, and for new, whose
    validation loader score calibration fits on. Every loader's dataset carries `train_item_counts`, the training
    interactions per item that the popularity metrics read."""
    logger = getLogger()
    if config["save_dataloaders"]:
        logger.warning("save_dataloaders is ignored for new-item datasets: the loaders are rebuilt from the (cached) "
                       "dataset, which is fast and cannot go stale.")
    largest_k = max(config["topk"]) if config["topk"] else 0
    if largest_k > dataset.item_num - 1:
        # RecBole's collector takes the top max(topk) of all items and would fail with "index k out of range".
        raise DataError(f"Option 'topk' = {config['topk']} asks for top-{largest_k} lists, but {dataset.dataset_name} "
                        f"has only {dataset.item_num - 1} items; use topk values of at most {dataset.item_num - 1}.")
    if split_mode(config) == COLD_SPLIT:
        train, parts = dataset.build_scopes()
    else:
        train, valid, test = dataset.build()
        parts = {"new": (valid, test)}
    counts = torch.bincount(train.inter_feat[dataset.iid_field], minlength=dataset.item_num)
    for part in (train, *(phase_part for pair in parts.values() for phase_part in pair)):
        part.train_item_counts = counts
    # The samplers' used items: every scope's positives of a phase, so that each phase's ranking excludes what
    # the user did in earlier phases, whichever scope it came from.
    union = parts.get("all", parts["new"])
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, [train, *union])
    train_data = _train_loader(config, train, train_sampler)
    loaders = {}
    for scope in dict.fromkeys(["new", *config["eval_scopes"]]):
        loaders[scope] = tuple(_eval_loader(config, phase, part, sampler, scope) for phase, part, sampler
                               in zip(("valid", "test"), parts[scope], (valid_sampler, test_sampler)))
    if config["split_export_file"] and distributed.is_writer():
        dataset.export_split(config["split_export_file"])
        logger.info(set_color("Item split written to", "pink") + f": [{config['split_export_file']}]")
    logger.info(set_color("[Training]: ", "pink") + set_color("train_batch_size", "cyan") + " = "
                + set_color(f"[{config['train_batch_size']}]", "yellow") + set_color(" train_neg_sample_args", "cyan")
                + ": " + set_color(f"[{config['train_neg_sample_args']}]", "yellow"))
    logger.info(set_color("[Evaluation]: ", "pink") + set_color("eval_batch_size", "cyan") + " = "
                + set_color(f"[{config['eval_batch_size']}]", "yellow") + set_color(" eval_args", "cyan") + ": "
                + set_color(f"[{config['eval_args']}]", "yellow") + set_color(" candidate_pool", "cyan") + ": "
                + set_color(f"[{config['candidate_pool']}]", "yellow"))
    return train_data, loaders


def _train_loader(config: Any, train: Any, sampler: Any) -> Any:
    """RecBole's training loader for the model, drawing each epoch's negatives in one call; in a multi-process run,
    this process's share of it. Models without gradient training (Pop, ItemKNN, ...: typed TRADITIONAL) count over
    the whole epoch in every process."""
    loader_class = get_dataloader(config, "train")
    if issubclass(loader_class, TrainDataLoader):
        loader_class = with_epoch_negatives(loader_class)
    if distributed.is_distributed() and config["MODEL_TYPE"] == ModelType.GENERAL:
        return sharded(loader_class)(config, train, sampler, shuffle=config["shuffle"], rank=distributed.rank(),
                                     world=distributed.world_size())
    return loader_class(config, train, sampler, shuffle=config["shuffle"])


def _eval_loader(config: Any, phase: str, part: Any, sampler: Any, scope: str) -> Any:
    if config["eval_args"]["mode"][phase] == "full":
        return NewItemFullSortEvalDataLoader(config, part, sampler, shuffle=False, scope=scope)
    return get_dataloader(config, phase)(config, part, sampler, shuffle=False)
