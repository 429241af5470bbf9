"""Modality features of a dataset folder: feature files and mask files read, checked and gathered per item.

Row r of a feature file belongs to item token r, or to the tokens `item_row_file` maps to it. A missing modality
is an all-NaN row or a 0 in the modality's mask file; a partly NaN or infinite row is an error.
"""
import os
from typing import Any, List, Optional, Tuple

import numpy as np
import pandas as pd
import torch

from recbole_milk.errors import DataError


def dataset_file(config: Any, name: Optional[str]) -> Optional[str]:
    """A dataset file option resolved against the dataset folder (absolute paths are kept)."""
    if name is None:
        return None
    return name if os.path.isabs(name) else os.path.join(config["data_path"], name)


def item_rows(config: Any, tokens: np.ndarray) -> np.ndarray:
    """Feature-file row of every real item, from its token (`tokens` without PAD; index = internal id - 1)."""
    row_file = config["item_row_file"]
    if row_file is None:
        rows = pd.to_numeric(pd.Series(tokens), errors="coerce")
        bad = rows.isna() | (rows < 0) | (rows != rows.round())
        if bad.any():
            raise DataError(f"Item token {tokens[bad.to_numpy()][0]!r} is not a feature-row number: without "
                            "'item_row_file', row r of each feature file belongs to item token r. Give "
                            "'item_row_file' (TSV: item token, row) to map tokens to rows.")
        return rows.to_numpy(dtype=np.int64)
    path = dataset_file(config, row_file)
    try:
        table = pd.read_csv(path, sep="\t", header=None, dtype=str, usecols=[0, 1])
    except ValueError as error:
        raise DataError(f"item_row_file '{path}' must be a TSV with two columns, item token<TAB>row ({error}).") \
            from error
    if len(table) and not str(table.iloc[0, 1]).strip().isdigit():
        table = table.iloc[1:]  # a header line
    rows = pd.to_numeric(table[1].str.strip(), errors="coerce")
    if rows.isna().any() or (rows < 0).any():
        raise DataError(f"item_row_file '{path}': the second column must be a non-negative row number on every "
                        "line (TSV: item token<TAB>row).")
    mapping = dict(zip(table[0].str.strip(), rows.astype(np.int64)))
    missing = [token for token in tokens if token not in mapping]
    if missing:
        raise DataError(f"item_row_file '{path}' has no row for {len(missing)} items of the dataset (e.g. "
                        f"{missing[:5]}); every item needs features: add them to the file.")
    return np.array([mapping[token] for token in tokens], dtype=np.int64)

def load_modalities(config: Any, modality_names: List[str], item_tokens: np.ndarray,
                    item_num: int) -> Tuple[List[torch.Tensor], torch.Tensor]:
    """Per modality float32 (item_num, d) features (missing rows zero) and bool (item_num, M) real availability.

    `item_tokens` are the dataset's item tokens by internal id (entry 0 is PAD)."""
    n_modalities = len(modality_names)
    available = torch.zeros((item_num, n_modalities), dtype=torch.bool)
    if not n_modalities:
        return [], available
    tokens = item_tokens[1:]
    rows = item_rows(config, tokens)
    mask_files = config["modality_mask_files"] or {}
    features = []
    for m, name in enumerate(modality_names):
        path = dataset_file(config, config["modalities"][name])
        full = read_matrix(path, rows, name, tokens, config["dataset"])
        present = ~np.isnan(full[1:]).all(axis=1)
        if name in mask_files:
            mask_path = dataset_file(config, mask_files[name])
            flagged = read_mask(mask_path, rows)
            contradiction = flagged & ~present
            if contradiction.any():
                raise DataError(f"Mask file '{mask_path}' marks modality '{name}' present for item "
                                f"{tokens[contradiction][0]!r}, whose row in '{path}' is all NaN; "
                                "fix the mask or the features.")
            present = flagged
        if not present.any():
            raise DataError(f"Modality '{name}' ('{path}') is missing for every item; remove it from "
                            "'modalities' or supply its features.")
        full[1:][~present] = 0.0
        features.append(torch.from_numpy(full))
        available[1:, m] = torch.from_numpy(present)
    return features, available

ROW_CHUNK = 65536


def read_matrix(path: str, rows: np.ndarray, name: str, tokens: np.ndarray, dataset_name: str) -> np.ndarray:
    """float32 (len(rows) + 1, d): row 0 zero (PAD), then rows `rows` of a .npy feature file, checked: numeric 2-d,
    long enough, no partial NaN or inf.

    The file is memory-mapped and copied once, chunk by chunk, into the result: the whole matrix is never held
    twice, and a float16 file costs its float32 result only."""
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"Feature file '{path}' (modality '{name}') is not a readable .npy matrix ({error}); "
                        "write it with numpy.save.") from error
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
        raise DataError(f"Feature file '{path}' (modality '{name}') holds a {matrix.dtype} array of shape "
                        f"{matrix.shape}; it must be a numeric 2-d matrix (rows = items).")
    if len(rows) and rows.max() >= matrix.shape[0]:
        worst = int(np.argmax(rows))
        raise DataError(f"Feature file '{path}' (modality '{name}') has {matrix.shape[0]} rows, but item "
                        f"{tokens[worst]!r} needs row {rows[worst]}; every item of "
                        f"{dataset_name}.inter needs a feature row: regenerate the file, or map items to rows "
                        "with 'item_row_file'.")
    # Cast on the copy, before any statistic: float16 sums overflow.
    full = np.zeros((len(rows) + 1, matrix.shape[1]), dtype=np.float32)
    for start in range(0, len(rows), ROW_CHUNK):
        chunk = rows[start:start + ROW_CHUNK]
        full[1 + start:1 + start + len(chunk)] = matrix[chunk]
    nan = np.isnan(full[1:])
    partial = nan.any(axis=1) & ~nan.all(axis=1)
    infinite = np.isinf(full[1:]).any(axis=1)
    for bad, what in ((partial, "some NaN values"), (infinite, "infinite values")):
        if bad.any():
            raise DataError(f"Feature file '{path}' (modality '{name}'): row {rows[bad][0]} (item "
                            f"{tokens[bad][0]!r}) has {what}. A missing modality must be a "
                            "whole row of NaN (or flagged in 'modality_mask_files'); fix or drop these values.")
    return full

def read_mask(path: str, rows: np.ndarray) -> np.ndarray:
    """Entries `rows` of a .npy availability vector (bool or 0/1 per feature row), checked."""
    try:
        mask = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"Mask file '{path}' is not a readable .npy vector ({error}).") from error
    mask = mask.reshape(-1) if mask.ndim == 2 and 1 in mask.shape else mask
    if mask.ndim != 1 or not (mask.dtype == bool or np.isin(mask, (0, 1)).all()):
        raise DataError(f"Mask file '{path}' must be a 1-d vector of booleans or 0/1 per feature row; it holds "
                        f"{mask.dtype} of shape {mask.shape}.")
    if len(rows) and rows.max() >= len(mask):
        raise DataError(f"Mask file '{path}' has {len(mask)} entries, but feature row {rows.max()} is used; it needs "
                        "one entry per feature row.")
    return mask[rows].astype(bool)
