"""New items served while they keep arriving: register an item with whatever modalities it has, ask who should see
it, ask which new items suit a user, delete it. recbole_milk.http_api puts this behind HTTP.

Users are fixed by the artefact, so their index is built once; registered items live in an ItemStore (persisted)
and an item index that follows it. One lock serialises changes and item searches, so a search never sees an index
that is half-way through an insertion and the store's log is written by one request at a time. Encoding, the
expensive part of a registration, runs outside the lock.
"""
import threading
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from recbole_milk.errors import UserInputError
from recbole_milk.inference import NewItemScorer, ServingError
from recbole_milk.item_store import ItemStore
from recbole_milk.search import DEFAULT_EF_SEARCH, VectorIndex

MAX_K = 1000
MAX_ITEMS_PER_REQUEST = 10_000
MAX_ID_LENGTH = 256
ItemFeatures = Mapping[str, Optional[Sequence[float]]]


class UnknownItemError(UserInputError):
    """An item id that is not registered."""


class UnknownUserError(UserInputError):
    """A user token the model was not trained with."""


class DuplicateItemError(UserInputError):
    """An item id that is already registered."""


def check_k(k: int) -> int:
    if not 1 <= k <= MAX_K:
        raise ServingError(f"k must be between 1 and {MAX_K}, got {k}.")
    return k


class NewItemService:
    """Registration and top-k answers for new items, over one model's artefact and one store."""

    def __init__(self, scorer: NewItemScorer, store: ItemStore, index_kind: str = "exact",
                 ef_search: int = DEFAULT_EF_SEARCH):
        self.scorer, self.store, self.index_kind = scorer, store, index_kind
        self._users = scorer.user_embeddings().numpy()
        if store.dim != self._users.shape[1]:
            raise ServingError(f"The store holds {store.dim}-dimensional items but the model scores with "
                               f"{self._users.shape[1]} dimensions.")
        # Row 0 is RecBole's padding user: it is neither searchable nor addressable.
        self._user_rows = {str(token): row for row, token in enumerate(scorer.user_tokens) if row > 0}
        self._user_index = VectorIndex(self._users.shape[1], index_kind, ef_search)
        self._user_index.add(np.arange(1, len(self._users)), self._users[1:])
        self._item_index = VectorIndex(self._users.shape[1], index_kind, ef_search)
        self._item_index.add(*store.live())
        self._lock = threading.Lock()

    @property
    def n_users(self) -> int:
        return len(self._user_rows)

    def item_count(self) -> int:
        with self._lock:
            return len(self.store)

    # ----- registration -----

    def parse_items(self, items: Sequence[Tuple[str, ItemFeatures]]) -> Tuple[List[str], Dict[str, np.ndarray]]:
        """Ids and per-modality feature rows (NaN rows where an item misses a modality) of a registration request,
        after checking all of it; the first problem found is raised, naming the item and the modality."""
        if not items:
            raise ServingError("'items' is empty: send at least one item.")
        if len(items) > MAX_ITEMS_PER_REQUEST:
            raise ServingError(f"{len(items)} items in one request; send at most {MAX_ITEMS_PER_REQUEST} per request.")
        ids = [item_id for item_id, _ in items]
        self._check_ids(ids)
        known = set(self.scorer.modality_names)
        for item_id, features in items:
            unknown = sorted(set(features) - known)
            if unknown:
                raise ServingError(f"Item '{item_id}': unknown modality '{unknown[0]}'; this model knows "
                                   f"{self.scorer.modality_names}.")
        rows = {}
        for name, dim in zip(self.scorer.modality_names, self.scorer.modality_dims):
            rows[name] = self._modality_rows(name, dim, ids, [features.get(name) for _, features in items])
        return ids, rows

    def _check_ids(self, ids: List[str]) -> None:
        seen = set()
        for item_id in ids:
            if not 0 < len(item_id) <= MAX_ID_LENGTH or "/" in item_id:
                raise ServingError(f"Item id {item_id[:MAX_ID_LENGTH]!r} is not usable: give 1 to {MAX_ID_LENGTH} "
                                   "characters without '/', so that /items/{id} can address it.")
            if item_id in seen:
                raise ServingError(f"Item '{item_id}' appears more than once in the request; send each id once.")
            seen.add(item_id)
        self._check_new(ids)

    def _check_new(self, ids: Sequence[str]) -> None:
        taken = next((item_id for item_id in ids if item_id in self.store), None)
        if taken is not None:
            raise DuplicateItemError(f"Item '{taken}' is already registered; DELETE /items/{taken} first to replace "
                                     "it.")

    @staticmethod
    def _modality_rows(name: str, dim: int, ids: List[str], values: List[Optional[Sequence[float]]]) -> np.ndarray:
        out = np.full((len(ids), dim), np.nan, dtype=np.float32)
        present = [i for i, row in enumerate(values) if row is not None]
        if not present:
            return out
        wrong = next((i for i in present if len(values[i]) != dim), None)
        if wrong is not None:
            raise ServingError(f"Item '{ids[wrong]}', modality '{name}': {len(values[wrong])} numbers; this model "
                               f"needs {dim} (or null when the item misses '{name}').")
        with np.errstate(over="ignore"):  # a number past float32's range becomes inf and is reported below
            rows = np.array([values[i] for i in present], dtype=np.float32)
        finite = np.isfinite(rows)
        if not finite.all():
            bad_row, position = np.argwhere(~finite)[0]
            raise ServingError(f"Item '{ids[present[bad_row]]}', modality '{name}': value {position} is "
                               f"{values[present[bad_row]][position]!r}, not a finite float32 number. Send null (or "
                               f"leave '{name}' out) when the item misses the modality.")
        out[present] = rows
        return out

    def register(self, items: Sequence[Tuple[str, ItemFeatures]]) -> List[str]:
        """Check, encode and store new items, all or none; return their ids."""
        ids, features = self.parse_items(items)
        vectors = self.scorer.encode_items(features).numpy()
        with self._lock:
            self._check_new(ids)  # again: a concurrent request may have taken an id while this one was encoding
            keys = self.store.add(ids, vectors)
            self._item_index.add(keys, vectors)
        return ids

    def delete(self, item_id: str) -> None:
        with self._lock:
            self._require_item(item_id)
            self._item_index.remove(self.store.remove([item_id]))

    def _require_item(self, item_id: str) -> None:
        if item_id not in self.store:
            raise UnknownItemError(f"Item '{item_id}' is not registered; POST it to /items first.")

    # ----- answers -----

    def users_for_item(self, item_id: str, k: int) -> List[Tuple[str, float]]:
        """The k users to show a registered item to, best first, with the model's scores."""
        check_k(k)
        with self._lock:
            self._require_item(item_id)
            vector = self.store.vector(item_id).copy()
        rows, scores = self._user_index.search(vector, k)
        found = rows[0] >= 0
        return list(zip(self.scorer.user_tokens[rows[0][found]].tolist(), scores[0][found].tolist()))

    def items_for_user(self, user: str, k: int) -> List[Tuple[str, float]]:
        """The k registered items that suit a user best, with the model's scores."""
        check_k(k)
        row = self._user_rows.get(user)
        if row is None:
            raise UnknownUserError(f"User '{user}' is unknown: only users seen in training ({self.n_users} of them) "
                                   "can be served.")
        with self._lock:
            keys, scores = self._item_index.search(self._users[row], k)
            found = keys[0] >= 0
            ids = self.store.ids_of(keys[0][found])
        return list(zip(ids, scores[0][found].tolist()))

