"""Resumable runs: fingerprints of a run's options, every random stream an epoch draws from, resume points.

After each validation a run keeps a resume point beside its best checkpoint: the training state plus every random
stream, so that a run resumed from it ends bit-identical to an uninterrupted one. Its name and its content carry the
run's fingerprint, a hash of every option that changes what the run computes; `resume_from: latest` takes the newest
resume point whose content says it was written by this plugin under the same fingerprint.
"""
import glob
import hashlib
import json
import os
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from recbole_milk import distributed
from recbole_milk.checkpoint import load_checkpoint
from recbole_milk.errors import ConfigError

RESUME_LATEST = "latest"
# Options that say where a run writes or how it talks, not what it computes: a run may resume under other values.
RUN_LOCAL_OPTIONS = frozenset({
    "resume_from", "checkpoint_dir", "log_dir", "tensorboard_dir", "show_progress", "state", "save_dataset",
    "dataset_save_path", "save_dataloaders", "dataloaders_save_path", "split_export_file", "log_wandb",
    "wandb_project", "gpu_id", "use_gpu", "device", "local_rank", "ip", "port", "offset", "ddp_backend", "ddp_timeout",
})


def canonical(value: Any) -> Any:
    """`value` as nested lists of JSON scalars, with dict keys sorted: equal options hash equally."""
    if isinstance(value, dict):
        return [[str(key), canonical(value[key])] for key in sorted(value, key=str)]
    if isinstance(value, (list, tuple)):
        return [canonical(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def run_fingerprint(config: Any) -> str:
    """A short hash of every option that changes what a run computes (RUN_LOCAL_OPTIONS left out)."""
    options = {key: value for key, value in config.final_config_dict.items() if key not in RUN_LOCAL_OPTIONS}
    return hashlib.sha1(json.dumps(canonical(options)).encode("utf-8")).hexdigest()[:12]


def resume_file_name(stem: str, fingerprint: str) -> str:
    return f"{stem}.resume-{fingerprint}.pth"


def find_resume_point(checkpoint_dir: str, fingerprint: str) -> Optional[str]:
    """The newest resume point in `checkpoint_dir` that this plugin wrote for an unfinished run with this
    fingerprint, or None. Files are trusted by their content, not their name."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(checkpoint_dir), resume_file_name("*", fingerprint))):
        try:
            modified = os.path.getmtime(path)
            checkpoint = load_checkpoint(path)
        except (FileNotFoundError, ConfigError):
            continue  # finished meanwhile, or not one of ours
        resume = checkpoint.get("resume")
        if isinstance(resume, dict) and resume.get("fingerprint") == fingerprint:
            found.append((modified, path))
    return max(found)[1] if found else None


def capture_random_state(model: Any, train_data: Any) -> Dict[str, Any]:
    """Every random stream a training epoch draws from, as tensors and plain data: the global ones, the train
    loader's shuffling generator and the model's own (a model with private generators exposes random_state())."""
    model_state = getattr(model, "random_state", None)
    generator = getattr(train_data, "generator", None)
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "train_loader": generator.get_state() if isinstance(generator, torch.Generator) else None,
        "model": model_state() if callable(model_state) else None,
    }


def restore_random_state(state: Dict[str, Any], model: Any) -> None:
    """Restore what capture_random_state saved, except the train loader's generator, which the trainer restores
    when training starts."""
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    # Checkpoints are loaded onto the training device; generator states must be CPU byte tensors.
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng.cpu() for rng in state["cuda"]])
    if state.get("model") is not None:
        model.load_random_state(state["model"])


def resume_section(config: Any, best_model_file: str, stopped: bool, epoch_seconds: list,
                   random_states: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The part of a resume point that a best-model checkpoint lacks. `random_states`: capture_random_state of
    every process of the run, in rank order (one for a one-process run)."""
    section = {
        "fingerprint": run_fingerprint(config),
        # By name: the best checkpoint sits beside the resume point, wherever the folder is moved.
        "best_model_file": os.path.basename(best_model_file),
        "stopped": stopped,
        "epoch_seconds": list(epoch_seconds),
        "random_state": random_states[0],
    }
    if len(random_states) > 1:
        section["random_state_by_rank"] = list(random_states)
    return section


def process_random_state(resume: Dict[str, Any], logger: Any) -> Dict[str, Any]:
    """This process's random streams in a resume point: its own if a run of as many processes wrote it, else rank
    0's (then the processes draw alike, and the run differs from an uninterrupted one)."""
    states = resume.get("random_state_by_rank") or [resume["random_state"]]
    if len(states) == distributed.world_size():
        return states[distributed.rank()]
    logger.warning(f"The resume point was written by a run of {len(states)} process(es), this one has "
                   f"{distributed.world_size()}: every process continues from rank 0's random streams.")
    return states[0]


def load_for_resume(path: str, config: Any, device: Any) -> Dict[str, Any]:
    """A checkpoint to continue training from, checked to be one of this model on this dataset."""
    try:
        checkpoint = load_checkpoint(path, device)
    except ConfigError as error:
        raise ConfigError(f"Option 'resume_from': {error} Or set resume_from: ~ to start clean.") from error
    saved = checkpoint["config"]
    if saved["model"] != config["model"] or saved["dataset"] != config["dataset"]:
        raise ConfigError(f"Option 'resume_from': checkpoint '{path}' is a {saved['model']} run on {saved['dataset']}, "
                          f"not {config['model']} on {config['dataset']}; pick a checkpoint of this model and "
                          "dataset.")
    return checkpoint

