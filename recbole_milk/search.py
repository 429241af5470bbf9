"""Top-k search by inner product over vectors keyed by integer ids, through FAISS: exact or approximate (HNSW).

The inner product of a user embedding and an item representation is the model's score, so an inner-product index
over either side answers "who should see this item" and "which items for this user". The exact index scans every
vector (faiss.IndexFlatIP); HNSW (faiss.IndexHNSWFlat) visits a small graph neighbourhood instead, for millions of
vectors, at a recall that --ef_search trades against speed (benchmarks/ann_recall.py measures it).
"""
from typing import Tuple

import faiss
import numpy as np

from recbole_milk.errors import ConfigError

INDEX_KINDS = ("exact", "hnsw")
HNSW_NEIGHBORS = 32
HNSW_EF_CONSTRUCTION = 80
DEFAULT_EF_SEARCH = 128
PARALLEL_QUERIES = 20


class VectorIndex:
    """Vectors under int64 ids, searched by inner product; ids are the caller's and must not be reused.

    Not safe for a search that runs while another thread adds or removes: the caller serialises changes.
    """

    def __init__(self, dim: int, kind: str = "exact", ef_search: int = DEFAULT_EF_SEARCH):
        if kind not in INDEX_KINDS:
            raise ConfigError(f"Index kind {kind!r} is unknown; choose one of {list(INDEX_KINDS)}.")
        self.dim, self.kind = int(dim), kind
        self._index = self._empty()
        # HNSW cannot unlink a node from its graph: removed ids are filtered out of every search until they
        # outnumber the live ones, and then the graph is rebuilt from the live vectors.
        self._removed = np.empty(0, dtype=np.int64)
        self.set_ef_search(ef_search)

    def set_ef_search(self, ef_search: int) -> None:
        """Candidates an HNSW search visits: higher is slower and closer to exact (the exact index ignores it)."""
        if ef_search < 1:
            raise ConfigError(f"ef_search must be >= 1, got {ef_search}.")
        self.ef_search = int(ef_search)
        self._params = self._search_params()

    def _search_params(self):
        if self.kind == "exact":
            return None
        if not len(self._removed):
            return faiss.SearchParametersHNSW(efSearch=self.ef_search)
        # The parameters only point at their selectors: hold them for as long as the parameters are used.
        self._selectors = (faiss.IDSelectorBatch(self._removed),)
        self._selectors += (faiss.IDSelectorNot(self._selectors[0]),)
        return faiss.SearchParametersHNSW(sel=self._selectors[1], efSearch=self.ef_search)

    def _empty(self) -> faiss.Index:
        if self.kind == "exact":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        graph = faiss.IndexHNSWFlat(self.dim, HNSW_NEIGHBORS, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return faiss.IndexIDMap2(graph)

    def __len__(self) -> int:
        return int(self._index.ntotal) - len(self._removed)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add `vectors` (n, dim) under `ids` (n,)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(vectors) != len(ids):
            raise ValueError(f"expected {len(ids)} vectors of dimension {self.dim}, got shape {vectors.shape}")
        if len(ids):
            self._index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if self.kind == "exact":
            self._index.remove_ids(ids)
            return
        self._removed = np.union1d(self._removed, ids)
        if len(self._removed) > len(self):
            self._rebuild()
        self._params = self._search_params()

    def _rebuild(self) -> None:
        ids = faiss.vector_to_array(self._index.id_map)
        vectors = self._index.index.reconstruct_n(0, self._index.ntotal)
        live = ~np.isin(ids, self._removed)
        self._index = self._empty()
        self._removed = np.empty(0, dtype=np.int64)
        self.add(ids[live], vectors[live])

    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """(ids, scores), each (n_queries, min(k, len(self))), best first; an id of -1 marks a slot HNSW left empty."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = min(int(k), len(self))
        if k < 1:
            return np.empty((len(queries), 0), dtype=np.int64), np.empty((len(queries), 0), dtype=np.float32)
        threads = faiss.omp_get_max_threads()
        if len(queries) < PARALLEL_QUERIES:
            # An OpenMP team costs more than it saves on a few queries (milliseconds when the cores are busy), and
            # concurrent requests keep the cores busy anyway: run on the calling thread (the setting is per thread).
            faiss.omp_set_num_threads(1)
        try:
            scores, ids = self._index.search(queries, k, params=self._params)
        finally:
            faiss.omp_set_num_threads(threads)
        return ids, scores
