"""Tiny datasets written by the tests themselves, in the plugin's layout: <name>.inter + one .npy per modality."""
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

MODALITY_NAMES = ("visual", "acoustic", "textual", "extra")


def write_toy_dataset(
    root: Path,
    name: str = "toy",
    n_users: int = 40,
    n_items: int = 50,
    n_modalities: int = 2,
    dims: Optional[Sequence[int]] = None,
    inter_per_user: int = 8,
    seed: int = 0,
    feature_dtype: str = "float32",
    extra_rows: int = 0,
) -> Dict[str, Any]:
    """Write `root/name/` and return a config_dict for recbole_milk.config.Config(model=..., config_dict=...).

    - `name.inter`: user_id, item_id, rating, timestamp. Every user has `inter_per_user` distinct items (at least)
      and every item token 0..n_items-1 has at least one interaction.
    - One `<modality>_feat.npy` per modality (names from MODALITY_NAMES), shape (n_items + extra_rows, dims[m]),
      dtype `feature_dtype`, row r = item token r. Values are N(m, 1), so modalities have different means.
    - The config_dict points logs, TensorBoard and checkpoints under `root` and turns off caching and progress bars.
    """
    rng = np.random.default_rng(seed)
    dims = list(dims) if dims is not None else [8, 6, 4, 5][:n_modalities]
    if len(dims) != n_modalities or n_modalities > len(MODALITY_NAMES):
        raise ValueError(f"dims {dims} must give one dimension per modality ({n_modalities}, at most "
                         f"{len(MODALITY_NAMES)}).")
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)

    users = np.repeat(np.arange(n_users), inter_per_user)
    items = np.concatenate([rng.choice(n_items, size=inter_per_user, replace=False) for _ in range(n_users)])
    pairs = np.unique(np.stack([np.concatenate([users, np.arange(n_items) % n_users]),
                                np.concatenate([items, np.arange(n_items)])], axis=1), axis=0)
    pairs = pairs[rng.permutation(len(pairs))]
    with open(folder / f"{name}.inter", "w", encoding="utf-8") as handle:
        handle.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for t, (user, item) in enumerate(pairs):
            handle.write(f"{user}\t{item}\t{1 + t % 5}\t{1000 + t}\n")

    modalities = {}
    for m, dim in enumerate(dims):
        features = rng.normal(loc=float(m), scale=1.0, size=(n_items + extra_rows, dim)).astype(feature_dtype)
        file_name = f"{MODALITY_NAMES[m]}_feat.npy"
        np.save(folder / file_name, features)
        modalities[MODALITY_NAMES[m]] = file_name

    return {
        "data_path": str(root),
        "dataset": name,
        "modalities": modalities or None,
        "checkpoint_dir": str(Path(root) / "saved"),
        "log_dir": str(Path(root) / "log"),
        "tensorboard_dir": str(Path(root) / "log_tensorboard"),
        "save_dataset": False,
        "show_progress": False,
        "state": "WARNING",
    }


def toy_config(config_dict: Dict[str, Any], model: str = "BPR", **overrides: Any):
    """recbole_milk Config for `config_dict` (from write_toy_dataset) with `overrides` on top."""
    from recbole_milk.config import Config

    return Config(model=model, config_dict={**config_dict, **overrides})
