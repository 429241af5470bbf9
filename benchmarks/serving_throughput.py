"""Serving throughput: encode N synthetic new items and find the top-k users of each, from a trained artefact.

    python -m benchmarks.serving_throughput --artifact saved/MILK-tiktok-....artifact.pt --items 100000 --k 20

Features are random rows with the artefact's modality dimensions; `--missing_share` of the items miss one modality
(an all-NaN row), as in FTMT. Prints items encoded per second, items whose top-k users were found per second and
the peak RSS (before and after the bare baseline). Set the torch thread count with --threads (default: torch's
choice).

The top-k is also measured against a bare `torch.topk(items @ users.T, k)` of the same shapes in the same process,
so the figure that matters, top_k_ratio_to_bare (target: at most 2), does not depend on the machine or its load.
Each is timed --repeats times, alternating, and the fastest run counts (other jobs only ever slow a run down).
"""
import argparse
import resource
import time

import numpy as np
import torch


def synthetic_features(names, dims, n_items: int, missing_share: float, seed: int) -> dict:
    """Random feature rows per modality; a `missing_share` of items miss one (random) modality."""
    rng = np.random.default_rng(seed)
    features = {name: rng.standard_normal((n_items, dim)).astype(np.float32) for name, dim in zip(names, dims)}
    missing = np.flatnonzero(rng.random(n_items) < missing_share)
    which = rng.integers(0, len(names), size=len(missing))
    for m, name in enumerate(names):
        features[name][missing[which == m]] = np.nan
    return features


def _timed(work):
    start = time.perf_counter()
    result = work()
    return result, time.perf_counter() - start


def _peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=4096)
    parser.add_argument("--missing_share", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2023)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from recbole_milk.compat import apply_numpy_aliases
    from recbole_milk.inference import NewItemScorer

    apply_numpy_aliases()
    scorer = NewItemScorer.from_artifact(args.artifact, batch_size=args.batch_size)
    features = synthetic_features(scorer.modality_names, scorer.modality_dims, args.items, args.missing_share,
                                  args.seed)
    start = time.perf_counter()
    items = scorer.encode_items(features)
    encoded = time.perf_counter()
    user_rows = scorer.user_embeddings()[1:]
    top_k_seconds, bare_seconds, scorer_rss = [], [], None
    for _ in range(args.repeats):
        (users, _), seconds = _timed(lambda: scorer.recommend_users(items, args.k))
        top_k_seconds.append(seconds)
        # Before the bare top-k holds its items x users score matrix, which the scorer never does.
        scorer_rss = scorer_rss or _peak_rss_mb()
        bare_seconds.append(_timed(lambda: torch.topk(items @ user_rows.T, args.k, dim=1))[1])
    figures = {
        "items": args.items,
        "users": len(user_rows),
        "k": args.k,
        "threads": torch.get_num_threads(),
        "encode_seconds": round(encoded - start, 3),
        "encode_items_per_second": round(args.items / (encoded - start)),
        "top_k_seconds": round(min(top_k_seconds), 3),
        "top_k_items_per_second": round(args.items / min(top_k_seconds)),
        "bare_matmul_topk_seconds": round(min(bare_seconds), 3),
        "top_k_ratio_to_bare": round(min(top_k_seconds) / min(bare_seconds), 3),
        "scorer_peak_rss_mb": scorer_rss,
        "peak_rss_mb_with_bare": _peak_rss_mb(),
    }
    assert users.shape == (args.items, args.k)
    for key, value in figures.items():
        print(f"{key}: {value}")
    return figures


if __name__ == "__main__":
    main()
