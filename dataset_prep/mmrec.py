"""Convert a dataset in the MMRec layout into the recbole-milk dataset layout.

The MMRec layout (also used by DGMRec and the MILK authors):
    SRC/<name>.inter   TSV with header `userID itemID [rating] [timestamp] x_label`
    SRC/<kind>_feat.npy  one matrix per modality (image, text, audio, ...), row r = itemID r

The plugin layout written to OUT/<name>/:
    <name>.inter       RecBole atomic file: user_id:token, item_id:token [, rating:float] [, timestamp:float]
    <modality>.npy     float32, row r = item token "r"; an all-NaN row marks the modality missing for that item
    <name>.yaml        dataset config (modalities, load_col), read automatically from the dataset folder

Usage:
    python dataset_prep/mmrec.py --src DIR --name NAME --out DATA_PATH
    python run_recbole_milk.py --model=MILK --dataset=NAME --data_path=DATA_PATH
"""
import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

try:
    import recbole_milk  # noqa: F401
except ImportError:  # run from a source checkout without `pip install .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from recbole_milk.atomic import atomic_directory, atomic_write, save_npy, write_text
from recbole_milk.cli import run_cli
from recbole_milk.errors import UserInputError

FEATURE_SUFFIX = "_feat.npy"
# MMRec file prefixes -> the plugin's modality names (by role); other prefixes keep their own name.
MODALITY_NAMES = {"image": "visual", "v": "visual", "audio": "acoustic", "a": "acoustic", "text": "text", "t": "text"}
# Modalities are listed in this order (then others alphabetically), so that converted datasets agree with
# properties/dataset/*.yaml: the order fixes the modality index used by environments and missing patterns.
MODALITY_ORDER = ("visual", "acoustic", "text")
# MMRec column -> (plugin column, RecBole type). x_label (MMRec's warm split) and unknown columns are dropped.
INTER_COLUMNS = {
    "userID": ("user_id", "token"),
    "itemID": ("item_id", "token"),
    "rating": ("rating", "float"),
    "timestamp": ("timestamp", "float"),
}


class ConversionError(UserInputError):
    """The source folder cannot be converted; the message names the file and the fix."""


def find_inter_file(src: Path, name: str) -> Path:
    """SRC/<name>.inter, or the only .inter file in SRC."""
    preferred = src / f"{name}.inter"
    if preferred.is_file():
        return preferred
    found = sorted(src.glob("*.inter"))
    if len(found) == 1:
        return found[0]
    listed = ", ".join(path.name for path in found) or "none"
    raise ConversionError(
        f"{src} needs one interaction file {name}.inter (found: {listed}); rename it to {name}.inter "
        "or pass the matching --name."
    )


def find_feature_files(src: Path) -> Dict[str, Path]:
    """Modality name -> SRC/<kind>_feat.npy, for every such file present."""
    found: Dict[str, Path] = {}
    for path in sorted(src.glob(f"*{FEATURE_SUFFIX}")):
        prefix = path.name[: -len(FEATURE_SUFFIX)]
        modality = MODALITY_NAMES.get(prefix, prefix)
        if modality in found:
            raise ConversionError(
                f"{path} and {found[modality]} both map to modality '{modality}'; keep one of them in {src}."
            )
        found[modality] = path
    rank = {modality: index for index, modality in enumerate(MODALITY_ORDER)}
    found = dict(sorted(found.items(), key=lambda entry: (rank.get(entry[0], len(rank)), entry[0])))
    if not found:
        raise ConversionError(
            f"{src} has no feature file *{FEATURE_SUFFIX} (for example image_feat.npy, text_feat.npy, audio_feat.npy); "
            "add at least one, with row r holding the features of itemID r."
        )
    return found


def read_mmrec_inter(path: Path) -> pd.DataFrame:
    """The interactions with plugin column names; ids checked to be non-negative integers."""
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [column for column in ("userID", "itemID") if column not in frame.columns]
    if missing:
        raise ConversionError(
            f"{path} lacks column(s) {missing} (header: {list(frame.columns)}); an MMRec .inter file is "
            "tab-separated with the header `userID itemID [rating] [timestamp] x_label`."
        )
    kept = [column for column in frame.columns if column in INTER_COLUMNS]
    frame = frame[kept].rename(columns={column: INTER_COLUMNS[column][0] for column in kept})
    for column in ("user_id", "item_id"):
        valid = frame[column].str.fullmatch(r"\d+")
        if not valid.all():
            line = int(np.flatnonzero(~valid.to_numpy())[0]) + 2
            raise ConversionError(
                f"{path} line {line}: {column} {frame[column].iloc[line - 2]!r} is not a non-negative integer; "
                "MMRec ids are 0-based integers that index the feature rows."
            )
        frame[column] = frame[column].astype(np.int64).astype(str)  # canonical tokens: "007" -> "7"
    for column in ("rating", "timestamp"):
        if column in frame.columns:
            values = pd.to_numeric(frame[column], errors="coerce")
            if values.isna().any():
                line = int(np.flatnonzero(values.isna().to_numpy())[0]) + 2
                raise ConversionError(f"{path} line {line}: {column} {frame[column].iloc[line - 2]!r} is not a number.")
    if frame.empty:
        raise ConversionError(f"{path} has no interactions.")
    return frame


def load_features(path: Path, num_items: int, zero_rows_missing: bool) -> np.ndarray:
    """The feature matrix as float32 with missing rows set to NaN; checked against the item ids."""
    try:
        raw = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ConversionError(f"{path} is not a readable .npy matrix ({error}); save it with numpy.save.") from error
    if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.number):
        raise ConversionError(
            f"{path} holds a {raw.ndim}-d {raw.dtype} array; it must be a 2-d numeric matrix (items x dims)."
        )
    if raw.shape[0] < num_items:
        raise ConversionError(
            f"{path} has {raw.shape[0]} rows but the interactions use itemID up to {num_items - 1}; "
            "row r must hold the features of itemID r."
        )
    # float16 sources overflow in any reduction: cast first.
    features = np.array(raw, dtype=np.float32)  # a writable copy, also when the source is float32
    finite = np.isfinite(features)
    all_nan = np.isnan(features).all(axis=1)
    broken = ~finite.all(axis=1) & ~all_nan
    if broken.any():
        raise ConversionError(
            f"{path} row {int(np.flatnonzero(broken)[0])} mixes finite and NaN/inf values "
            f"({int(broken.sum())} such rows); a missing modality must be a whole all-NaN (or all-zero) row."
        )
    if zero_rows_missing:
        features[(features == 0).all(axis=1)] = np.nan
    return features


def dataset_yaml(name: str, src: Path, modality_files: Dict[str, str], inter_columns: List[str]) -> str:
    lines = [
        f"# {name}: converted by dataset_prep/mmrec.py from {src}.",
        "# Read automatically from the dataset folder; --config_files and command-line options override it.",
        "load_col:",
        f"  inter: [{', '.join(column for column in inter_columns if column in ('user_id', 'item_id'))}]",
        "modalities:",
    ]
    lines += [f"  {modality}: {file}" for modality, file in modality_files.items()]
    return "\n".join(lines) + "\n"


def convert_mmrec(
    src: os.PathLike,
    name: str,
    out: os.PathLike,
    overwrite: bool = False,
    zero_rows_missing: bool = True,
) -> Dict[str, Any]:
    """Write OUT/<name>/ in the plugin layout from an MMRec-layout folder SRC; return its statistics.

    Item token "r" keeps row r of every feature file, so no item_row_file is needed. Feature files with fewer
    rows than the others are padded with NaN (missing) rows. All-zero rows count as missing unless
    zero_rows_missing is False. The folder is written under a temporary name, then renamed.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise ConversionError(f"--src {src} is not a folder; pass the folder holding <name>.inter and *_feat.npy.")
    if not name or any(sep in name for sep in ("/", "\\")) or name.startswith("."):
        raise ConversionError(f"--name {name!r} is invalid; use a plain dataset name such as 'tiktok'.")
    target = out / name
    if target.exists() and not overwrite:
        raise ConversionError(f"{target} already exists; remove it, pick another --out, or pass --overwrite.")
    inter_path = find_inter_file(src, name)
    feature_paths = find_feature_files(src)

    print(f"Reading {inter_path}", flush=True)
    inter = read_mmrec_inter(inter_path)
    num_items = int(inter["item_id"].astype(np.int64).max()) + 1
    features = {}
    for modality, path in feature_paths.items():
        print(f"Reading {path} as modality '{modality}'", flush=True)
        features[modality] = load_features(path, num_items, zero_rows_missing)
    rows = max(matrix.shape[0] for matrix in features.values())
    for modality, matrix in features.items():
        if matrix.shape[0] < rows:
            padding = np.full((rows - matrix.shape[0], matrix.shape[1]), np.nan, dtype=np.float32)
            features[modality] = np.concatenate([matrix, padding])

    modality_files = {modality: f"{modality}.npy" for modality in features}
    types = dict(INTER_COLUMNS.values())
    header = [f"{column}:{types[column]}" for column in inter.columns]
    with atomic_directory(target, replace=overwrite) as staging:
        os.chmod(staging, 0o755)
        with atomic_write(staging / f"{name}.inter", "w", encoding="utf-8") as handle:
            inter.to_csv(handle, sep="\t", index=False, header=header)
        for modality, matrix in features.items():
            save_npy(staging / modality_files[modality], matrix)
        write_text(staging / f"{name}.yaml", dataset_yaml(name, src, modality_files, list(inter.columns)))

    used = np.unique(inter["item_id"].astype(np.int64).to_numpy())
    stats = {
        "folder": str(target),
        "users": int(inter["user_id"].nunique()),
        "items": int(used.size),
        "interactions": int(len(inter)),
        "duplicate_interactions": int(inter.duplicated(["user_id", "item_id"]).sum()),
        "feature_rows": rows,
        "columns": list(inter.columns),
        "modalities": {
            modality: {
                "source": feature_paths[modality].name,
                "file": modality_files[modality],
                "dim": int(matrix.shape[1]),
                "missing_items": int(np.isnan(matrix[used]).all(axis=1).sum()),
            }
            for modality, matrix in features.items()
        },
    }
    return stats


def format_stats(stats: Dict[str, Any], name: str, out: Path) -> str:
    lines = [
        f"Wrote {stats['folder']}: {stats['users']} users, {stats['items']} items with interactions, "
        f"{stats['interactions']} interactions ({stats['duplicate_interactions']} repeated user-item pairs), "
        f"{stats['feature_rows']} feature rows.",
    ]
    for modality, entry in stats["modalities"].items():
        lines.append(
            f"  {modality}: {entry['file']} from {entry['source']}, {entry['dim']}-d, "
            f"{entry['missing_items']} interacted items missing"
        )
    lines.append(
        f"Run: python run_recbole_milk.py --model=MILK --dataset={name} --data_path={out}"
    )
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, help="folder with <name>.inter and *_feat.npy (MMRec layout)")
    parser.add_argument("--name", required=True, help="dataset name; the output is OUT/NAME/")
    parser.add_argument("--out", required=True, help="DATA_PATH: the folder that will hold NAME/")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT/NAME if it exists")
    parser.add_argument(
        "--keep_zero_rows", action="store_true",
        help="keep all-zero feature rows as features (by default they mark the modality missing)",
    )
    args = parser.parse_args(argv)
    stats = convert_mmrec(args.src, args.name, args.out, args.overwrite, not args.keep_zero_rows)
    print(format_stats(stats, args.name, Path(args.out)))
    return stats


if __name__ == "__main__":
    run_cli(main)
