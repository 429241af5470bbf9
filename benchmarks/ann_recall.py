"""Approximate search at scale: HNSW against exact inner product over synthetic item representations.

    python -m benchmarks.ann_recall --items 1000000 --k 20 --ef_search 64,128,256,512
    python -m benchmarks.ann_recall --items 100000 --artifact saved/MILK-tiktok-....artifact.pt   # a quick run

Items and queries (users) are random Gaussian rows, --dim wide, or as wide as a trained artefact's user embeddings
with --artifact (its real users are then the queries). With --artifact and --encoded, the items are the model's
representations of random feature rows (benchmarks.serving_throughput.synthetic_features), which are shaped like
what the service indexes, not uniform in every direction. Both indexes are recbole_milk.search.VectorIndex, what
`python -m recbole_milk.serve --index exact|hnsw` searches with. Prints the build seconds and memory of each index,
the seconds for --queries queries in one batch and per single query (as the service asks), and HNSW's recall@k
against the exact top k for each --ef_search.
"""
import argparse
import resource
import time

import numpy as np

ADD_CHUNK = 100_000


def _rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _items_and_queries(args):
    rng = np.random.default_rng(args.seed + 1)
    if args.artifact is None:
        queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
        return np.random.default_rng(args.seed).standard_normal((args.items, args.dim)).astype(np.float32), queries
    from benchmarks.serving_throughput import synthetic_features
    from recbole_milk.compat import apply_numpy_aliases
    from recbole_milk.inference import NewItemScorer

    apply_numpy_aliases()
    scorer = NewItemScorer.from_artifact(args.artifact, batch_size=4096)
    users = scorer.user_embeddings().numpy()[1:]
    queries = users[rng.choice(len(users), size=min(args.queries, len(users)), replace=False)]
    if args.encoded:
        features = synthetic_features(scorer.modality_names, scorer.modality_dims, args.items, 0.5, args.seed)
        return scorer.encode_items(features).numpy(), queries
    return np.random.default_rng(args.seed).standard_normal((args.items, users.shape[1])).astype(np.float32), queries


def _build(kind: str, items: np.ndarray, ef_search: int):
    from recbole_milk.search import VectorIndex

    index = VectorIndex(items.shape[1], kind, ef_search)
    start = time.perf_counter()
    for offset in range(0, len(items), ADD_CHUNK):
        index.add(np.arange(offset, min(offset + ADD_CHUNK, len(items))), items[offset:offset + ADD_CHUNK])
        if kind == "hnsw":
            print(f"  hnsw: {offset + ADD_CHUNK if offset + ADD_CHUNK < len(items) else len(items)} items added, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    return index, time.perf_counter() - start


def _timed_search(index, queries: np.ndarray, k: int, single: int):
    start = time.perf_counter()
    found, _ = index.search(queries, k)
    batch = time.perf_counter() - start
    start = time.perf_counter()
    for query in queries[:single]:
        index.search(query, k)
    return found, batch, (time.perf_counter() - start) / single


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=65, help="ignored with --artifact")
    parser.add_argument("--artifact", default=None, help="take the dimension and the queries from this artefact")
    parser.add_argument("--encoded", action="store_true", help="items: the artefact's encoding of random features")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single_queries", type=int, default=200, help="of them, timed one at a time")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--ef_search", default="64,128,256,512", help="comma-separated HNSW settings to measure")
    parser.add_argument("--seed", type=int, default=2023)
    args = parser.parse_args(argv)
    ef_values = [int(value) for value in args.ef_search.split(",")]

    if args.encoded and args.artifact is None:
        parser.error("--encoded needs --artifact: the items are that model's representations")
    items, queries = _items_and_queries(args)
    single = min(args.single_queries, len(queries))
    figures = {"items": args.items, "item_rows": "encoded" if args.encoded else "gaussian", "dim": queries.shape[1],
               "queries": len(queries), "k": args.k,
               "rss_mb_with_items": _rss_mb()}

    exact, seconds = _build("exact", items, ef_values[0])
    truth, batch, per_query = _timed_search(exact, queries, args.k, single)
    figures.update({"exact_build_seconds": round(seconds, 2), "exact_batch_seconds": round(batch, 3),
                    "exact_ms_per_single_query": round(1000 * per_query, 2), "rss_mb_with_exact": _rss_mb()})
    del exact

    hnsw, seconds = _build("hnsw", items, ef_values[0])
    figures.update({"hnsw_build_seconds": round(seconds, 1), "rss_mb_with_hnsw": _rss_mb()})
    for ef in ef_values:
        hnsw.set_ef_search(ef)
        found, batch, per_query = _timed_search(hnsw, queries, args.k, single)
        # A row's recall: the share of the exact top k that HNSW also returned.
        hits = (found[:, :, None] == truth[:, None, :]).any(axis=1).sum(axis=1)
        figures.update({f"hnsw_ef{ef}_recall@{args.k}": round(float(np.mean(hits / truth.shape[1])), 4),
                        f"hnsw_ef{ef}_batch_seconds": round(batch, 3),
                        f"hnsw_ef{ef}_ms_per_single_query": round(1000 * per_query, 3)})
    for key, value in figures.items():
        print(f"{key}: {value}")
    return figures


if __name__ == "__main__":
    main()
