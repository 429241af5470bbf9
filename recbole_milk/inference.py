"""Serve new items without retraining: a self-contained artefact and a batched scorer over it.

The artefact holds only tensors, strings and numbers (it loads with torch's weights_only=True): the model's
weights, its options, the user tokens, the modality names and dimensions, the imputation values, the item roles and,
for a two-stage model, its frozen CF rows. The scorer rebuilds the model around it, so item representations come
from exactly the code that produced the metrics. Every plugin model is servable (ContentRecommender.servable).
"""
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from recbole_milk.atomic import atomic_write, save_npy, save_torch
from recbole_milk.errors import UserInputError
from recbole_milk.utils import get_model

ARTIFACT_FORMAT = 3
ARTIFACT_SUFFIX = ".artifact.pt"
# Scores one block of the streaming top-k may hold (256 MB of float32), beside batch_size x batch_size.
SCORE_BLOCK = 2 ** 26
FeatureInput = Union[Mapping[str, Optional[np.ndarray]], Sequence[Optional[np.ndarray]]]


class ServingError(UserInputError):
    """Input the scorer cannot serve; the message says which modality or argument and how to fix it."""


def artifact_path_for(checkpoint_file: str) -> str:
    """The artefact's path beside a checkpoint: saved/MILK-...pth -> saved/MILK-....artifact.pt."""
    stem = checkpoint_file[:-4] if checkpoint_file.endswith(".pth") else checkpoint_file
    return stem + ARTIFACT_SUFFIX


def _model_options(model: Any, config: Any) -> Dict[str, Any]:
    keys = set(getattr(type(model), "option_rules", {})) | {"embedding_size", "seed"}
    return {key: config[key] for key in sorted(keys)}


def write_artifact(model: Any, dataset: Any, config: Any, path: str) -> str:
    """Write what inference needs to `path` (atomically) and return the path."""
    if not getattr(model, "servable", False):
        raise ServingError(f"Model {type(model).__name__} cannot serve new items: it is not a content model of this "
                           "plugin (recbole_milk.model.abstract_recommender.ContentRecommender).")
    serving_tensors = getattr(model, "serving_tensors", None)
    state = {
        "format": ARTIFACT_FORMAT,
        "model": type(model).__name__,
        "options": _model_options(model, config),
        "fields": {key: config[key] for key in ("USER_ID_FIELD", "ITEM_ID_FIELD", "NEG_PREFIX")},
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "user_tokens": [str(token) for token in dataset.field2id_token[dataset.uid_field]],
        "item_count": int(dataset.item_num),
        "modality_names": list(dataset.modality_names),
        "modality_dims": [int(features.shape[1]) for features in dataset.item_features],
        "imputation_values": [value.detach().cpu().float() for value in dataset.imputation_values],
        "item_role": torch.as_tensor(dataset.item_role).long().cpu(),
        "pretrained_cf": list(serving_tensors()) if callable(serving_tensors) else None,
    }
    save_torch(path, state)
    return path


class _ArtifactDataset:
    """Stands in for the training dataset when a model is rebuilt from an artefact: users, modalities, imputation
    values, item roles and a two-stage model's CF rows. Item tables keep their trained size (so per-item weights
    load) but hold no content: new items arrive through encode_items."""

    def __init__(self, artifact: Dict[str, Any]):
        self.uid_field = artifact["fields"]["USER_ID_FIELD"]
        self.iid_field = artifact["fields"]["ITEM_ID_FIELD"]
        self.n_users = len(artifact["user_tokens"])
        self.n_items = int(artifact["item_count"])
        self.modality_names = list(artifact["modality_names"])
        self.item_features = [torch.zeros(self.n_items, dim) for dim in artifact["modality_dims"]]
        self.item_availability = torch.zeros(self.n_items, len(self.modality_names), dtype=torch.bool)
        self.imputation_values = list(artifact["imputation_values"])
        self.item_role = artifact["item_role"]
        if artifact["pretrained_cf"] is not None:
            self.pretrained_cf = tuple(artifact["pretrained_cf"])

    def num(self, field: str) -> int:
        return self.n_users if field == self.uid_field else self.n_items


class NewItemScorer:
    """Scores new items for users from a trained model's artefact, in batches.

    Features of new items are given per modality, in the artefact's modality order or as a {name: array} map.
    A modality missing for every item is None (or left out of the map); a modality missing for one item is an
    all-NaN row. Missing modalities are imputed exactly as in training and evaluation.
    """

    def __init__(self, model: torch.nn.Module, user_tokens: Sequence[str], modality_names: Sequence[str],
                 modality_dims: Sequence[int], batch_size: int = 1024):
        self.model = model.eval()
        self.user_tokens = np.asarray(user_tokens, dtype=object)
        self._user_index = {token: index for index, token in enumerate(self.user_tokens)}
        self.modality_names = list(modality_names)
        self.modality_dims = [int(dim) for dim in modality_dims]
        if batch_size < 1:
            raise ServingError(f"batch_size must be >= 1, got {batch_size}.")
        self.batch_size = batch_size

    @classmethod
    def from_artifact(cls, path: str, device: str = "cpu", batch_size: int = 1024) -> "NewItemScorer":
        """Rebuild the model from an artefact written at the end of training."""
        if not os.path.isfile(path):
            raise ServingError(f"Artefact '{path}' not found; training writes it beside the checkpoint as "
                               f"<checkpoint>{ARTIFACT_SUFFIX}.")
        artifact = torch.load(path, map_location="cpu", weights_only=True)
        if artifact.get("format") != ARTIFACT_FORMAT:
            raise ServingError(f"Artefact '{path}' has format {artifact.get('format')!r}; this version reads format "
                               f"{ARTIFACT_FORMAT}. Retrain, or use the recbole_milk version that wrote it.")
        config = dict(artifact["options"], **artifact["fields"], device=torch.device(device))
        model = get_model(artifact["model"])(config, _ArtifactDataset(artifact))
        model.load_state_dict(artifact["state_dict"])
        model.to(device)
        return cls(model, artifact["user_tokens"], artifact["modality_names"], artifact["modality_dims"], batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ----- items -----

    def _as_modality_list(self, features: FeatureInput) -> List[Optional[np.ndarray]]:
        if isinstance(features, Mapping):
            unknown = sorted(set(features) - set(self.modality_names))
            if unknown:
                raise ServingError(f"Unknown modalities {unknown}; this model knows {self.modality_names}.")
            return [features.get(name) for name in self.modality_names]
        features = list(features)
        if len(features) != len(self.modality_names):
            raise ServingError(f"Got {len(features)} feature arrays; this model needs one per modality, in the order "
                               f"{self.modality_names} (None for a modality every item misses).")
        return features

    def _check_features(self, features: FeatureInput) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Float32 feature rows and availability (n, M) from user input, with every problem named."""
        arrays = self._as_modality_list(features)
        counts = {len(array) for array in arrays if array is not None}
        if len(counts) > 1:
            raise ServingError(f"Feature arrays have different numbers of rows {sorted(counts)}; give every modality "
                               "one row per new item, in the same order.")
        if not counts:
            raise ServingError("Every modality is None: there must be at least one array to know the number of items.")
        n_items = counts.pop()
        rows, availability = [], torch.zeros(n_items, len(arrays), dtype=torch.bool)
        for m, (name, dim, array) in enumerate(zip(self.modality_names, self.modality_dims, arrays)):
            if array is None:
                rows.append(torch.zeros(n_items, dim))
                continue
            array = np.asarray(array, dtype=np.float32)
            if array.ndim != 2 or array.shape[1] != dim:
                raise ServingError(f"Modality '{name}' has features of shape {array.shape}; this model needs "
                                   f"(n_items, {dim}).")
            nan = np.isnan(array)
            missing = nan.all(axis=1)
            if (nan.any(axis=1) & ~missing).any() or np.isinf(array).any():
                bad = int(np.flatnonzero((nan.any(axis=1) & ~missing) | np.isinf(array).any(axis=1))[0])
                raise ServingError(f"Modality '{name}', row {bad}: NaN or infinite values in a present row. Mark a "
                                   "missing modality with a whole row of NaN.")
            rows.append(torch.from_numpy(np.where(missing[:, None], 0.0, array).astype(np.float32)))
            availability[:, m] = torch.from_numpy(~missing)
        return rows, availability

    @torch.no_grad()
    def encode_items(self, features: FeatureInput) -> torch.Tensor:
        """Representations (n_items, D) of new items, computed in batches of `batch_size` items."""
        rows, availability = self._check_features(features)
        device = self.device
        out = []
        for start in range(0, len(availability), self.batch_size):
            end = start + self.batch_size
            out.append(self.model.encode_items([r[start:end].to(device) for r in rows],
                                               availability[start:end].to(device)))
        return torch.cat(out).cpu()

    def _representations(self, items: Union[FeatureInput, torch.Tensor]) -> torch.Tensor:
        return items.float() if isinstance(items, torch.Tensor) else self.encode_items(items)

    # ----- users -----

    @torch.no_grad()
    def user_embeddings(self) -> torch.Tensor:
        """Embeddings of all known users (n_users, D); row 0 is RecBole's padding user and is never recommended."""
        return self.model.user_embeddings().detach().cpu()

    def user_ids(self, users: Sequence[str]) -> torch.Tensor:
        unknown = [user for user in users if str(user) not in self._user_index or str(user) == "[PAD]"]
        if unknown:
            raise ServingError(f"Unknown users {unknown[:5]}{'...' if len(unknown) > 5 else ''}: only users seen in "
                               "training can be served.")
        return torch.tensor([self._user_index[str(user)] for user in users], dtype=torch.long)

    # ----- recommendations -----

    def _streaming_topk(self, queries: torch.Tensor, keys: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Top-k keys by inner product for every query, holding at most max(batch_size^2, SCORE_BLOCK) scores at once.

        A block of batch_size queries meets as many keys as the budget allows (all of them, for TikTok's users), so
        the work is one matmul and one topk per block; only key sets too large for one block pay a final merge of
        k candidates per key block.
        """
        k = min(k, len(keys))
        if k <= 0:
            raise ServingError("k must be >= 1 and there must be at least one candidate.")
        rows = max(1, min(len(queries), self.batch_size))
        key_block = max(self.batch_size, SCORE_BLOCK // rows)
        best_scores = torch.empty(len(queries), k, dtype=queries.dtype)
        best_index = torch.empty(len(queries), k, dtype=torch.long)
        for q_start in range(0, len(queries), rows):
            query = queries[q_start:q_start + rows]
            starts = range(0, len(keys), key_block)
            found = [torch.topk(query @ keys[start:start + key_block].T, min(k, key_block, len(keys) - start), dim=1)
                     for start in starts]
            scores = torch.cat([block.values for block in found], dim=1)
            index = torch.cat([block.indices + start for block, start in zip(found, starts)], dim=1)
            if len(found) > 1:
                scores, order = torch.topk(scores, k, dim=1)
                index = index.gather(1, order)
            best_scores[q_start:q_start + rows] = scores
            best_index[q_start:q_start + rows] = index
        return best_index, best_scores

    def recommend_users(self, items: Union[FeatureInput, torch.Tensor], k: int) -> Tuple[np.ndarray, torch.Tensor]:
        """For each new item, the k users to show it to: (user tokens (n_items, k), scores (n_items, k))."""
        # Row 0 is the padding user: search the real users and shift their positions back to user ids.
        index, scores = self._streaming_topk(self._representations(items), self.user_embeddings()[1:], k)
        return self.user_tokens[index.numpy() + 1], scores

    def recommend_items(self, users: Sequence[str], items: Union[FeatureInput, torch.Tensor],
                        k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """For each user (token), the top k of the given new items: (item positions (n_users, k), scores)."""
        queries = self.user_embeddings()[self.user_ids(users)]
        return self._streaming_topk(queries, self._representations(items), k)

    def score(self, users: Sequence[str], items: Union[FeatureInput, torch.Tensor]) -> torch.Tensor:
        """Full score matrix (n_users, n_items); for small inputs and checks."""
        return self.user_embeddings()[self.user_ids(users)] @ self._representations(items).T

    def export_embeddings(self, directory: str, items: Union[FeatureInput, torch.Tensor, None] = None,
                          item_ids: Optional[Sequence[str]] = None) -> Dict[str, str]:
        """Write user (and, if given, item) embeddings as .npy plus token lists, for an external ANN index.

        The inner product of a user row and an item row is the model's score. Returns the written paths.
        """
        os.makedirs(directory, exist_ok=True)
        written = {"user_embeddings": _save_npy(directory, "user_embeddings.npy", self.user_embeddings()[1:].numpy()),
                   "user_tokens": _save_lines(directory, "user_tokens.txt", self.user_tokens[1:])}
        if items is not None:
            representations = self._representations(items)
            ids = [str(i) for i in (item_ids if item_ids is not None else range(len(representations)))]
            if len(ids) != len(representations):
                raise ServingError(f"Got {len(ids)} item ids for {len(representations)} items.")
            written["item_embeddings"] = _save_npy(directory, "item_embeddings.npy", representations.numpy())
            written["item_tokens"] = _save_lines(directory, "item_tokens.txt", ids)
        return written


def _save_npy(directory: str, name: str, array: np.ndarray) -> str:
    return str(save_npy(os.path.join(directory, name), array.astype(np.float32)))


def _save_lines(directory: str, name: str, lines: Sequence[Any]) -> str:
    path = os.path.join(directory, name)
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.writelines(f"{line}\n" for line in lines)
    return path
