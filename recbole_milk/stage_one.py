"""Stage 1 of the two-stage models: warm BPR on the run's own split, exported as a pre-trained CF folder.

A two-stage run without `pretrained_cf_dir` trains BPR on its training loader (warm positives, warm negatives) for
`pretrain_epochs` epochs, without validation, and caches the folder under
`<checkpoint_dir>/pretrained-cf/<dataset>-<key>`, where the key hashes the dataset's cache key (split, masks,
filters, files) and the stage-1 options. Later runs with the same key reuse it. The random streams are restored
afterwards, so stage 2 trains exactly as it would from the same folder given as `pretrained_cf_dir`.
"""
import copy
import hashlib
import json
from logging import getLogger
from pathlib import Path
from typing import Any, Dict

import numpy as np
from recbole.model.general_recommender import BPR
from recbole.utils import init_seed

from recbole_milk import distributed
from recbole_milk.data.roles import ROLE_WARM
from recbole_milk.pretrained import META_FILE, warm_holdout_digest, write_cf_embeddings
from recbole_milk.resume import canonical, capture_random_state, restore_random_state
from recbole_milk.trainer import get_trainer

STAGE_ONE_OPTIONS = ("pretrain_epochs", "pretrain_embedding_size", "seed", "learning_rate", "train_batch_size")


def stage_one_folder(config: Any, dataset: Any) -> Path:
    """Where stage 1 of this run's dataset and stage-1 options is cached."""
    key = {"dataset": canonical(dataset.cache_key), "options": {name: config[name] for name in STAGE_ONE_OPTIONS}}
    digest = hashlib.sha1(json.dumps(canonical(key)).encode("utf-8")).hexdigest()[:12]
    return Path(config["checkpoint_dir"]) / "pretrained-cf" / f"{config['dataset']}-{digest}"


def _bpr_config(config: Any) -> Any:
    """The run's config, as BPR trained for pretrain_epochs epochs without validation or resuming."""
    bpr_config = copy.copy(config)
    bpr_config.final_config_dict = dict(config.final_config_dict, model="BPR",
                                        embedding_size=config["pretrain_embedding_size"],
                                        epochs=config["pretrain_epochs"], eval_step=0, resume_from=None)
    return bpr_config


def export_bpr(model: Any, dataset: Any, folder: str, meta: Dict[str, Any]) -> Path:
    """Write a trained BPR's user and warm item embeddings as a pre-trained CF folder, with the digest of the warm
    pairs its training held out."""
    user_tokens = np.asarray(dataset.field2id_token[dataset.uid_field])[1:]
    item_tokens = np.asarray(dataset.field2id_token[dataset.iid_field])[1:]
    warm = (dataset.item_role == ROLE_WARM).numpy()[1:]
    return write_cf_embeddings(folder, user_tokens, item_tokens, model.user_embedding.weight.detach().cpu().numpy()[1:],
                               model.item_embedding.weight.detach().cpu().numpy()[1:], item_tokens[warm],
                               dict(meta, warm_holdout=warm_holdout_digest(dataset)))


def ensure_stage_one(config: Any, train_data: Any) -> str:
    """The cached stage-1 folder of this run, trained now if it is not there yet."""
    dataset = train_data._dataset
    folder = stage_one_folder(config, dataset)
    logger = getLogger()
    if (folder / META_FILE).is_file():
        logger.info(f"Stage 1: reusing the warm BPR embeddings in {folder}")
        return str(folder)
    logger.info(f"Stage 1: training warm BPR for {config['pretrain_epochs']} epochs -> {folder}")
    state = capture_random_state(None, train_data)
    bpr_config = _bpr_config(config)
    init_seed(config["seed"] + distributed.rank(), config["reproducibility"])
    model = BPR(bpr_config, dataset).to(config["device"])
    trainer = get_trainer(bpr_config["MODEL_TYPE"], "BPR")(bpr_config, model)
    trainer.fit(train_data, valid_data=None, saved=False, show_progress=config["show_progress"])
    # In a multi-process run all processes train stage 1 together, rank 0 writes it, and the others wait for it.
    if distributed.is_writer():
        export_bpr(model, dataset, str(folder), {"model": "BPR", "dataset": config["dataset"],
                                                 "epochs_trained": len(trainer.epoch_seconds),
                                                 "options": {name: config[name] for name in STAGE_ONE_OPTIONS}})
    distributed.barrier()
    restore_random_state(state, None)
    train_data.generator.set_state(state["train_loader"])
    trainer.tensorboard.close()
    return str(folder)
