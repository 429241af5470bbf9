"""Synthetic copies of a prepared dataset with its users duplicated, for the cost-scaling rows.

Copy k (k = 1 .. N-1) repeats every interaction under a new user token "<user>~k". Items, features, the new-item
split and the masks are unchanged, so an epoch sees N times the interactions of the original.
"""
import os
import shutil
from pathlib import Path

import pandas as pd

from recbole_milk.atomic import atomic_directory, atomic_write


def scaled_name(dataset: str, factor: int) -> str:
    return f"{dataset}_x{factor}"


def build_scaled(data_path: str, dataset: str, factor: int, out_path: str) -> str:
    """Write <out_path>/<dataset>_x<factor>/ once (atomically) and return its data_path (out_path)."""
    source = Path(data_path) / dataset
    name = scaled_name(dataset, factor)
    target = Path(out_path) / name
    if (target / f"{name}.inter").exists():
        return out_path
    inter_file = source / f"{dataset}.inter"
    if not inter_file.exists():
        raise FileNotFoundError(f"{inter_file} not found: the scaling rows need a prepared dataset folder "
                                f"(--data_path={data_path} --dataset={dataset})")
    inter = pd.read_csv(inter_file, sep="\t", dtype=str)
    user_column = next(column for column in inter.columns if column.split(":")[0] == "user_id")
    copies = [inter]
    for k in range(1, factor):
        copy = inter.copy()
        copy[user_column] = copy[user_column] + f"~{k}"
        copies.append(copy)
    with atomic_directory(target) as staging:
        with atomic_write(staging / f"{name}.inter", "w", encoding="utf-8") as handle:
            pd.concat(copies, ignore_index=True).to_csv(handle, sep="\t", index=False)
        for path in source.iterdir():
            if path.name == f"{dataset}.inter":
                continue
            destination = staging / (f"{name}.yaml" if path.name == f"{dataset}.yaml" else path.name)
            if path.name == f"{dataset}.yaml":
                shutil.copyfile(path, destination)
            else:
                os.symlink(path.resolve(), destination)
    return out_path
