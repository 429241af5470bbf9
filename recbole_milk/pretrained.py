"""Pre-trained warm CF embeddings: the folder format, its lookup by token, and attaching it to a dataset.

Two-stage models (DropoutNet, Heater, GAR, GoRec) train on frozen warm CF embeddings. run_recbole_milk finds them
in `pretrained_cf_dir`, or trains them itself (stage 1, recbole_milk/stage_one.py) and caches the folder under
checkpoint_dir. `python dataset_prep/export_cf_embeddings.py` writes such a folder explicitly.

Folder layout (written atomically: a temporary folder renamed into place):
  user_embeddings.npy  float32 (users in file, d); row r belongs to meta['user_tokens'][r]
  item_embeddings.npy  float32 (items in file, d); row r belongs to meta['item_tokens'][r]; rows of items that
                       were not warm are zero
  meta.json            format, model, dataset, token lists, warm_item_tokens (the items whose interactions
                       training saw), and the options that fixed the split

Rows are looked up by token, so the folder survives RecBole re-numbering items. Loading refuses a folder whose warm
items differ from the current split's: embeddings trained on interactions of a new item would leak it. It also
refuses, for a run that holds warm interactions out (eval_scopes warm or all), a folder trained without the same
holdout (meta['warm_holdout'], a digest of the held-out pairs): its embeddings may have seen them.
"""
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from recbole_milk.atomic import atomic_directory, save_npy, write_json
from recbole_milk.data.roles import ROLE_WARM
from recbole_milk.errors import DataError

FORMAT = "recbole-milk-cf/1"
USER_FILE = "user_embeddings.npy"
ITEM_FILE = "item_embeddings.npy"
META_FILE = "meta.json"
CONFIG_KEY = "pretrained_cf_dir"
EXPORT_COMMAND = (
    "python dataset_prep/export_cf_embeddings.py --dataset=<dataset> [the same data and split options as this run] "
    "--output=<folder>"
)


class PretrainedCFError(DataError):
    """The pre-trained CF folder is missing, malformed or does not match the current split; the message says how to
    create a matching one."""


def write_cf_embeddings(
    folder: str,
    user_tokens: Sequence[str],
    item_tokens: Sequence[str],
    user_embeddings: np.ndarray,
    item_embeddings: np.ndarray,
    warm_item_tokens: Sequence[str],
    meta: Dict[str, Any],
) -> Path:
    """Write the folder atomically; rows of items outside `warm_item_tokens` are written as zeros."""
    user_embeddings = np.ascontiguousarray(user_embeddings, dtype=np.float32)
    item_embeddings = np.array(item_embeddings, dtype=np.float32)
    user_tokens, item_tokens = [str(t) for t in user_tokens], [str(t) for t in item_tokens]
    warm = {str(t) for t in warm_item_tokens}
    if user_embeddings.shape[0] != len(user_tokens) or item_embeddings.shape[0] != len(item_tokens):
        raise ValueError(f"{len(user_tokens)} user and {len(item_tokens)} item tokens for embeddings of shapes "
                         f"{user_embeddings.shape} and {item_embeddings.shape}: one token per row is needed.")
    if user_embeddings.ndim != 2 or item_embeddings.ndim != 2 or user_embeddings.shape[1] != item_embeddings.shape[1]:
        raise ValueError(f"User and item embeddings must be matrices of the same width; got {user_embeddings.shape} "
                         f"and {item_embeddings.shape}.")
    unknown = sorted(warm - set(item_tokens))
    if unknown:
        raise ValueError(f"warm_item_tokens lists {len(unknown)} tokens without an embedding row (e.g. {unknown[:5]}).")
    item_embeddings[~np.isin(np.asarray(item_tokens), list(warm))] = 0.0
    content = dict(meta, format=FORMAT, embedding_size=int(user_embeddings.shape[1]), user_tokens=user_tokens,
                   item_tokens=item_tokens, warm_item_tokens=sorted(warm))

    with atomic_directory(folder) as staging:
        save_npy(staging / USER_FILE, user_embeddings)
        save_npy(staging / ITEM_FILE, item_embeddings)
        write_json(staging / META_FILE, content)
    return Path(folder)


def read_cf_folder(folder: str) -> Tuple[Dict[str, Any], np.ndarray, np.ndarray]:
    """(meta, user embeddings, item embeddings) of a folder, checked for shape and finiteness."""
    path = Path(folder)
    hint = (f"create it with `{EXPORT_COMMAND}` and pass --{CONFIG_KEY}=<folder>, or leave {CONFIG_KEY} unset (~) "
            "and the run trains its own")
    files = [path / META_FILE, path / USER_FILE, path / ITEM_FILE]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise PretrainedCFError(f"Option '{CONFIG_KEY}' = '{folder}' is not a pre-trained CF folder (missing "
                                f"{', '.join(missing)}); {hint}.")
    try:
        with open(path / META_FILE, encoding="utf-8") as handle:
            meta = json.load(handle)
        users = np.load(path / USER_FILE, allow_pickle=False)
        items = np.load(path / ITEM_FILE, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise PretrainedCFError(f"Pre-trained CF folder '{folder}' cannot be read ({error}); {hint}.") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PretrainedCFError(f"'{path / META_FILE}' is not in format {FORMAT}; {hint}.")
    shapes_ok = (
        users.ndim == 2 and items.ndim == 2 and users.shape[1] == items.shape[1]
        and users.shape[0] == len(meta.get("user_tokens", [])) and items.shape[0] == len(meta.get("item_tokens", []))
    )
    if not shapes_ok:
        raise PretrainedCFError(f"Pre-trained CF folder '{folder}': embeddings of shapes {users.shape} and "
                                f"{items.shape} do not match the token lists in {META_FILE}; {hint}.")
    if not (np.isfinite(users).all() and np.isfinite(items).all()):
        raise PretrainedCFError(f"Pre-trained CF folder '{folder}' holds NaN or infinite values; {hint}.")
    return meta, users.astype(np.float32), items.astype(np.float32)


def _rows_by_token(file_tokens: Sequence[str], wanted: np.ndarray) -> np.ndarray:
    """Row of each wanted token in the file's token list; -1 where the file has none."""
    return pd.Index([str(t) for t in file_tokens]).get_indexer([str(t) for t in wanted])


def warm_holdout_digest(dataset: Any) -> Optional[str]:
    """SHA-256 of the warm (user, item) token pairs `dataset` holds out of training per phase; None without any."""
    holdout = getattr(dataset, "warm_holdout", None)
    if holdout is None:
        return None
    users = np.asarray(dataset.field2id_token[dataset.uid_field]).astype(str)
    items = np.asarray(dataset.field2id_token[dataset.iid_field]).astype(str)
    digest = hashlib.sha256()
    for phase in sorted(holdout):
        user_ids, item_ids = np.divmod(holdout[phase], dataset.item_num)
        pairs = np.sort(np.char.add(np.char.add(users[user_ids], "\t"), items[item_ids]))
        digest.update(f"{phase}\n".encode("utf-8") + "\n".join(pairs.tolist()).encode("utf-8"))
    return digest.hexdigest()


def load_cf_embeddings(folder: str, dataset: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    """(user, item) float32 matrices (n_users, d) and (n_items, d) indexed by the dataset's internal ids.

    Item rows of items that are not warm in the dataset's split are zero: a new item has no CF representation.
    Raises PretrainedCFError if the folder's warm items differ from the split's, if it was not trained with the
    dataset's warm holdout, or if a user or warm item of the dataset has no row.
    """
    meta, users, items = read_cf_folder(folder)
    hint = (f"re-export with `{EXPORT_COMMAND}` using this run's dataset, split and filtering options, and pass "
            f"--{CONFIG_KEY}=<folder>")
    user_tokens = np.asarray(dataset.field2id_token[dataset.uid_field])[1:]
    item_tokens = np.asarray(dataset.field2id_token[dataset.iid_field])
    warm = torch.as_tensor(dataset.item_role) == ROLE_WARM
    warm_tokens = {str(t) for t in item_tokens[warm.numpy()]}
    file_warm = {str(t) for t in meta.get("warm_item_tokens", [])}
    if warm_tokens != file_warm:
        leaked = sorted(file_warm - warm_tokens)
        absent = sorted(warm_tokens - file_warm)
        raise PretrainedCFError(
            f"Pre-trained CF folder '{folder}' was trained on a different item split: {len(leaked)} of its warm items "
            f"are not warm here (e.g. {leaked[:5]}; their interactions would leak new items into training) and "
            f"{len(absent)} warm items here were not warm there (e.g. {absent[:5]}); {hint}.")
    held_out = warm_holdout_digest(dataset)
    if held_out is not None and meta.get("warm_holdout") != held_out:
        raise PretrainedCFError(
            f"Pre-trained CF folder '{folder}' was not trained with this run's warm holdout (eval_scopes "
            f"{dataset.config['eval_scopes']}, warm_holdout_ratio {dataset.config['warm_holdout_ratio']}): its "
            "embeddings may have seen the held-out warm interactions the warm and all scopes rank; "
            f"{hint}, eval_scopes and warm_holdout_ratio included.")

    user_rows = _rows_by_token(meta["user_tokens"], user_tokens)
    if (user_rows < 0).any():
        absent = user_tokens[user_rows < 0][:5].tolist()
        raise PretrainedCFError(f"Pre-trained CF folder '{folder}' has no row for {int((user_rows < 0).sum())} users "
                                f"of dataset '{meta.get('dataset')}' (e.g. {absent}); {hint}.")
    warm_ids = torch.nonzero(warm).squeeze(1).numpy()
    item_rows = _rows_by_token(meta["item_tokens"], item_tokens[warm_ids])
    if (item_rows < 0).any():
        raise PretrainedCFError(f"Pre-trained CF folder '{folder}': {META_FILE} lists warm items without an embedding "
                                f"row (e.g. {item_tokens[warm_ids][item_rows < 0][:5].tolist()}); {hint}.")

    dim = users.shape[1]
    user_matrix = torch.zeros((len(user_tokens) + 1, dim), dtype=torch.float32)
    user_matrix[1:] = torch.from_numpy(users[user_rows])
    item_matrix = torch.zeros((len(item_tokens), dim), dtype=torch.float32)
    item_matrix[torch.from_numpy(warm_ids)] = torch.from_numpy(items[item_rows])
    return user_matrix, item_matrix


def attach_pretrained_cf(dataset: Any, folder: str) -> None:
    """Give `dataset` the embeddings of `folder` as `dataset.pretrained_cf` (user, item matrices by internal id),
    the input a two-stage model reads when it is built."""
    dataset.pretrained_cf = load_cf_embeddings(folder, dataset)
