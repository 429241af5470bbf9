"""Recommend freshly uploaded items with a trained model's artefact, without retraining.

    python recommend_new_items.py --artifact saved/MILK-....artifact.pt --items new_items/ --k 20 --output recs.tsv

The --items folder holds `items.txt` (one item id per line) and one `<modality>.npy` per modality the model knows
(row i = the i-th item of items.txt). A modality file that is absent means every item misses that modality; an
all-NaN row means that item misses it. Missing modalities are imputed as in training.

--mode users (default): for each new item, the k users to show it to (TSV: item_id, rank, user_id, score).
--mode items: for each user in --users (a file of user ids, default all users), the top k new items
              (TSV: user_id, rank, item_id, score).
"""
import argparse
import os
import sys

import numpy as np
import pandas as pd

from recbole_milk.atomic import atomic_write
from recbole_milk.cli import run_cli
from recbole_milk.compat import apply_numpy_aliases
from recbole_milk.inference import NewItemScorer, ServingError


def read_new_items(folder: str, modality_names):
    """(item ids, {modality: array or None}) from a new-item folder; names the file that is wrong."""
    ids_file = os.path.join(folder, "items.txt")
    if not os.path.isfile(ids_file):
        raise ServingError(f"{ids_file} not found: list the new items' ids there, one per line, in feature-row order.")
    with open(ids_file, encoding="utf-8") as handle:
        item_ids = [line.strip() for line in handle if line.strip()]
    features = {}
    for name in modality_names:
        path = os.path.join(folder, f"{name}.npy")
        features[name] = np.load(path, allow_pickle=False) if os.path.isfile(path) else None
        if features[name] is not None and len(features[name]) != len(item_ids):
            raise ServingError(f"{path} has {len(features[name])} rows but {ids_file} lists {len(item_ids)} items; "
                               "give one feature row per listed item.")
    if all(array is None for array in features.values()):
        raise ServingError(f"{folder} holds none of the model's modality files "
                           f"{[f'{n}.npy' for n in modality_names]}.")
    return item_ids, features


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", required=True, help="the .artifact.pt written beside the checkpoint")
    parser.add_argument("--items", required=True, help="folder with items.txt and <modality>.npy files")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--output", default="recommendations.tsv")
    parser.add_argument("--mode", choices=("users", "items"), default="users")
    parser.add_argument("--users", default=None, help="file of user ids for --mode items (default: all users)")
    parser.add_argument("--batch_size", type=int, default=1024)
    args = parser.parse_args(argv)

    apply_numpy_aliases()
    scorer = NewItemScorer.from_artifact(args.artifact, batch_size=args.batch_size)
    item_ids, features = read_new_items(args.items, scorer.modality_names)
    representations = scorer.encode_items(features)
    item_ids = np.asarray(item_ids, dtype=object)
    if args.mode == "users":
        users, scores = scorer.recommend_users(representations, args.k)
        columns = {"item_id": np.repeat(item_ids, users.shape[1]), "user_id": users.reshape(-1)}
    else:
        if args.users:
            with open(args.users, encoding="utf-8") as handle:
                user_list = [line.strip() for line in handle if line.strip()]
        else:
            user_list = list(scorer.user_tokens[1:])
        positions, scores = scorer.recommend_items(user_list, representations, args.k)
        columns = {"user_id": np.repeat(np.asarray(user_list, dtype=object), positions.shape[1]),
                   "item_id": item_ids[positions.numpy().reshape(-1)]}
    n_queries, k = scores.shape
    table = pd.DataFrame(columns)
    table.insert(1, "rank", np.tile(np.arange(1, k + 1), n_queries))
    table["score"] = scores.numpy().reshape(-1)
    with atomic_write(args.output, "w", encoding="utf-8") as handle:
        table.to_csv(handle, sep="\t", index=False, float_format="%.6f")
    print(f"wrote {len(table)} recommendations for {len(item_ids)} new items to {args.output}", file=sys.stderr)
    return args.output


if __name__ == "__main__":
    run_cli(main)
