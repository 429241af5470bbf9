"""Synthetic multimodal datasets with known item factors, in the plugin's dataset layout.

Every item j has latent factors v_j (k-dimensional); every user i has u_i. Modality m is a noisy projection of the
item's factors, x_j^m = tanh(A_m v_j) + noise_m * eps (A_m a fixed random d_m x k map), so modalities differ in
quality by their noise level: one can be strong and another weak. A user interacts with the items she prefers by
the factors: among `candidates` items drawn per user (popular items more often), the top ones by
<u_i, v_j> + b_j plus Gumbel noise. Optionally a share of the items really misses a modality (an all-NaN row).

    python dataset_prep/synthetic.py --out DATA --name synthetic                      # TikTok-sized defaults
    python dataset_prep/synthetic.py --out DATA --name big --users 200000 --items 1000000 \\
        --interactions 10000000 --dims 128,512 --noise 0.5,2.0
    python run_recbole_milk.py --model=MILK --dataset=synthetic --data_path=DATA

The folder holds NAME.inter, one <modality>.npy per modality, NAME.yaml (modalities, load_col) and
item_factors.npy / user_factors.npy (row r = item or user token r), the truth the data was drawn from. Generation
is chunked (memory is bounded by the chunk sizes, not by the dataset) and the folder is written atomically.
"""
import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

try:
    import recbole_milk  # noqa: F401
except ImportError:  # run from a source checkout without `pip install .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from recbole_milk.atomic import (
    atomic_directory,
    atomic_write,
    save_npy,
    write_json,
    write_text,
)
from recbole_milk.cli import run_cli
from recbole_milk.errors import UserInputError

USER_CHUNK = 4096
ITEM_CHUNK = 65536
MODALITY_NAMES = ("strong", "weak", "third", "fourth")


class SyntheticError(UserInputError):
    """Generator parameters that cannot make a dataset; the message names the parameter."""


@dataclass
class SyntheticSpec:
    users: int = 6000
    items: int = 5000
    interactions: int = 60000
    factors: int = 16
    dims: List[int] = field(default_factory=lambda: [64, 64])
    noise: List[float] = field(default_factory=lambda: [0.3, 1.5])
    missing_rates: List[float] = field(default_factory=lambda: [0.0, 0.0])
    popularity_skew: float = 0.5
    preference_scale: float = 8.0
    candidates: int = 200
    seed: int = 0

    def check(self) -> None:
        count = len(self.dims)
        problems = []
        if self.users < 2 or self.items < 10:
            problems.append(f"--users {self.users} and --items {self.items} must be at least 2 and 10")
        if self.interactions < self.users:
            problems.append(f"--interactions {self.interactions} must be at least --users {self.users} (one each)")
        if self.interactions > self.users * self.items // 2:
            problems.append(f"--interactions {self.interactions} is more than half of users x items")
        if not 1 <= count <= len(MODALITY_NAMES) or len(self.noise) != count or len(self.missing_rates) != count:
            problems.append(f"--dims, --noise and --missing_rates need one entry per modality (1 to "
                            f"{len(MODALITY_NAMES)}); got {len(self.dims)}, {len(self.noise)}, "
                            f"{len(self.missing_rates)}")
        if any(d < 1 for d in self.dims) or any(n < 0 for n in self.noise) or self.factors < 1:
            problems.append("--dims and --factors must be positive and --noise non-negative")
        if any(not 0 <= r < 1 for r in self.missing_rates):
            problems.append(f"--missing_rates {self.missing_rates} must each lie in [0, 1)")
        if self.candidates < 2:
            problems.append(f"--candidates {self.candidates} must be at least 2")
        if problems:
            raise SyntheticError("Cannot generate this dataset: " + "; ".join(problems) + ".")

    @property
    def modality_names(self) -> List[str]:
        return list(MODALITY_NAMES[: len(self.dims)])


def _interaction_counts(spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    """Interactions per user: at least one, geometric-like spread, summing exactly to spec.interactions."""
    weights = rng.exponential(1.0, spec.users) + 0.2
    extra = spec.interactions - spec.users
    counts = 1 + np.floor(weights / weights.sum() * extra).astype(np.int64)
    short = spec.interactions - int(counts.sum())
    counts[rng.choice(spec.users, size=short, replace=False)] += 1
    limit = max(1, spec.candidates // 2)
    overflow = int(np.maximum(counts - limit, 0).sum())
    counts = np.minimum(counts, limit)
    while overflow > 0:  # give what the candidate pool cannot hold to users with room
        room = np.flatnonzero(counts < limit)
        take = rng.choice(room, size=min(overflow, room.size), replace=False)
        counts[take] += 1
        overflow -= take.size
    return counts


def _interactions(spec: SyntheticSpec, users: np.ndarray, items: np.ndarray, bias: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """(interactions, 2) distinct (user, item) pairs, every user and item token in range."""
    counts = _interaction_counts(spec, rng)
    popularity = np.exp(bias - bias.max())
    cdf = np.cumsum(popularity / popularity.sum())
    pairs = []
    for start in range(0, spec.users, USER_CHUNK):
        stop = min(start + USER_CHUNK, spec.users)
        size = stop - start
        candidates = np.minimum(np.searchsorted(cdf, rng.random((size, spec.candidates))), spec.items - 1)
        logits = np.einsum("uk,uck->uc", users[start:stop], items[candidates]) * spec.preference_scale
        logits += rng.gumbel(size=logits.shape)
        # A candidate drawn twice keeps its first draw only, so a user's items are distinct.
        ordered = np.sort(candidates, axis=1)
        first = np.ones_like(ordered, dtype=bool)
        first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
        positions = np.argsort(candidates, axis=1, kind="stable")
        duplicate = np.zeros_like(first)
        np.put_along_axis(duplicate, positions, ~first, axis=1)
        logits[duplicate] = -np.inf
        order = np.argsort(-logits, axis=1)
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(spec.candidates)[None, :].repeat(size, 0), axis=1)
        chosen = (rank < counts[start:stop, None]) & np.isfinite(logits)
        rows, columns = np.nonzero(chosen)
        pairs.append(np.stack([rows + start, candidates[rows, columns]], axis=1))
    return np.concatenate(pairs)


def _features(spec: SyntheticSpec, items: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """Modality m of every item: tanh(A_m v_j) + noise_m * eps, and all-NaN rows for its really missing items."""
    projection = rng.standard_normal((spec.dims[m], spec.factors)).astype(np.float32) / math.sqrt(spec.factors)
    out = np.empty((spec.items, spec.dims[m]), dtype=np.float32)
    for start in range(0, spec.items, ITEM_CHUNK):
        stop = min(start + ITEM_CHUNK, spec.items)
        signal = np.tanh(items[start:stop] @ projection.T * 2.0)
        out[start:stop] = signal + spec.noise[m] * rng.standard_normal(signal.shape, dtype=np.float32)
    missing = rng.random(spec.items) < spec.missing_rates[m]
    out[missing] = np.nan
    return out


def dataset_yaml(name: str, spec: SyntheticSpec) -> str:
    lines = [f"# Synthetic dataset '{name}' (dataset_prep/synthetic.py): {spec.users} users, {spec.items} items, "
             f"{spec.interactions} interactions.",
             "load_col:", "  inter: [user_id, item_id]", "modalities:"]
    lines += [f"  {modality}: {modality}.npy" for modality in spec.modality_names]
    return "\n".join(lines) + "\n"


FEATURE_DTYPES = ("float32", "float16")


def generate(spec: SyntheticSpec, out: Path, name: str, log=print, feature_dtype: str = "float32") -> Dict[str, Any]:
    """Write the dataset folder out/name atomically; return its statistics.

    `feature_dtype` float16 halves the feature files on disk; the plugin reads them as float32 either way."""
    if feature_dtype not in FEATURE_DTYPES:
        raise SyntheticError(f"--feature_dtype must be one of {', '.join(FEATURE_DTYPES)}; got {feature_dtype!r}.")
    spec.check()
    start = time.perf_counter()
    rng = np.random.default_rng(spec.seed)
    users = (rng.standard_normal((spec.users, spec.factors)) / math.sqrt(spec.factors)).astype(np.float32)
    items = rng.standard_normal((spec.items, spec.factors)).astype(np.float32) / math.sqrt(spec.factors)
    bias = rng.normal(0.0, spec.popularity_skew, spec.items)
    with atomic_directory(out / name) as staging:
        pairs = _interactions(spec, users, items, bias, rng)
        log(f"{len(pairs)} interactions drawn in {time.perf_counter() - start:.1f}s")
        with atomic_write(staging / f"{name}.inter", "w", encoding="utf-8") as handle:
            handle.write("user_id:token\titem_id:token\n")
            np.savetxt(handle, pairs, fmt="%d", delimiter="\t")
        for m, modality in enumerate(spec.modality_names):
            save_npy(staging / f"{modality}.npy", _features(spec, items, m, rng).astype(feature_dtype, copy=False))
            log(f"modality '{modality}' ({spec.dims[m]}-d, noise {spec.noise[m]}) written")
        save_npy(staging / "item_factors.npy", items)
        save_npy(staging / "user_factors.npy", users)
        write_text(staging / f"{name}.yaml", dataset_yaml(name, spec))
        stats = {"name": name, "users": spec.users, "items": spec.items, "interactions": int(len(pairs)),
                 "items_with_interactions": int(np.unique(pairs[:, 1]).size), "spec": asdict(spec),
                 "feature_dtype": feature_dtype,
                 "seconds": round(time.perf_counter() - start, 2)}
        write_json(staging / "build_info.json", stats, indent=2)
    return stats


def _numbers(text: str, kind) -> List:
    return [kind(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    defaults = SyntheticSpec()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the data_path folder to write NAME/ into")
    parser.add_argument("--name", default="synthetic")
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--items", type=int, default=defaults.items)
    parser.add_argument("--interactions", type=int, default=defaults.interactions)
    parser.add_argument("--factors", type=int, default=defaults.factors, help="latent factor dimension k")
    parser.add_argument("--dims", default=",".join(map(str, defaults.dims)), help="feature size per modality")
    parser.add_argument("--noise", default=",".join(map(str, defaults.noise)), help="noise level per modality")
    parser.add_argument("--missing_rates", default=",".join(map(str, defaults.missing_rates)),
                        help="share of items really missing each modality")
    parser.add_argument("--popularity_skew", type=float, default=defaults.popularity_skew,
                        help="std of the item popularity logits")
    parser.add_argument("--preference_scale", type=float, default=defaults.preference_scale,
                        help="weight of <u, v> against the Gumbel noise when users choose")
    parser.add_argument("--candidates", type=int, default=defaults.candidates, help="items considered per user")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--feature_dtype", choices=FEATURE_DTYPES, default="float32",
                        help="dtype of the feature files on disk (float16 halves them; read as float32)")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    spec = SyntheticSpec(users=args.users, items=args.items, interactions=args.interactions, factors=args.factors,
                         dims=_numbers(args.dims, int), noise=_numbers(args.noise, float),
                         missing_rates=_numbers(args.missing_rates, float), popularity_skew=args.popularity_skew,
                         preference_scale=args.preference_scale, candidates=args.candidates, seed=args.seed)
    stats = generate(spec, Path(args.out), args.name, feature_dtype=args.feature_dtype)
    print(json.dumps({key: value for key, value in stats.items() if key != "spec"}))
    return stats


if __name__ == "__main__":
    run_cli(main)
