"""The embedded default dataset ml-100k-mm: ml-100k with three content modalities per movie.

It is built from the ml-100k copy inside the installed RecBole wheel, so nothing is downloaded and nothing of
GroupLens lives in this repository. The build takes a few seconds, is deterministic, and is written through
recbole_milk.atomic (a temporary folder beside the target, renamed into place), so concurrent builders never leave a
half-written dataset.
"""
import csv
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import pandas as pd

from recbole_milk.atomic import (
    atomic_directory,
    atomic_write,
    remove_stale_temporaries,
    save_npy,
    write_json,
)

DATASET_NAME = "ml-100k-mm"
# Bump when the recipe changes, so that caches built by an older recipe are rebuilt instead of reused.
RECIPE_VERSION = 1
TITLE_DIM = 32
KG_DIM = 64
RANDOM_STATE = 2023
BUILD_INFO = "build_info.json"
ITEM_ROW_FILE = "item_rows.tsv"
ITEM_ROW_HEADER = ("item_id", "row")
MODALITY_FILES = {"title": "title.npy", "genre": "genre.npy", "kg": "kg.npy"}
SOURCE_FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.kg", "ml-100k.link")
# GroupLens marks the one movie without a title as "unkonwn" (sic) and movies without a genre as "unknown".
MISSING_MARKERS = frozenset({"", "unknown", "unkonwn"})

PathLike = Union[str, os.PathLike]


def recbole_ml100k_dir() -> Path:
    """The ml-100k folder that ships inside the installed recbole package."""
    import recbole

    return Path(recbole.__file__).resolve().parent / "dataset_example" / "ml-100k"


def ensure_embedded_dataset(config: Any) -> None:
    """Build ml-100k-mm into config['data_path'] unless a build by the current recipe is already there."""
    if config["dataset"] != DATASET_NAME:
        raise ValueError(f"ensure_embedded_dataset only builds '{DATASET_NAME}', not '{config['dataset']}'.")
    target = Path(config["data_path"])
    if is_built(target):
        return
    build_ml100k_mm(target)


def is_built(target_dir: PathLike) -> bool:
    """True when target_dir holds a complete build by the current recipe."""
    info = _read_build_info(Path(target_dir))
    if info is None or info.get("recipe_version") != RECIPE_VERSION:
        return False
    expected = [f"{DATASET_NAME}.inter", ITEM_ROW_FILE, *MODALITY_FILES.values()]
    return all((Path(target_dir) / name).is_file() for name in expected)


def build_ml100k_mm(
    target_dir: PathLike,
    source_dir: Optional[PathLike] = None,
    title_dim: int = TITLE_DIM,
    kg_dim: int = KG_DIM,
) -> None:
    """Build ml-100k-mm into target_dir from a RecBole ml-100k folder (default: the installed wheel's copy).

    Writes <target>/ml-100k-mm.inter (user_id, item_id, timestamp), item_rows.tsv (item token -> feature row),
    title.npy, genre.npy and kg.npy (float32, one row per item, all-NaN where the modality is missing) and
    build_info.json (recipe, dimensions, missing counts). If another builder finishes first, its result is kept.
    """
    source = Path(source_dir) if source_dir is not None else recbole_ml100k_dir()
    target = Path(target_dir)
    _check_source(source)
    _check_target(target)
    for name, dim in (("title_dim", title_dim), ("kg_dim", kg_dim)):
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"{name} = {dim!r} is invalid: it must be an integer >= 1.")

    print(f"[recbole_milk] Building {DATASET_NAME} in {target} from {source} (first use only) ...", flush=True)
    inter = _implicit_interactions(source / "ml-100k.inter")
    item = _read_atomic(source / "ml-100k.item")
    items = _item_order(item, inter, source / "ml-100k.item")

    titles = _column_by_item(item, "movie_title", items, source / "ml-100k.item")
    title = _tfidf_svd_rows(
        _text_docs(titles), title_dim, "title", source / "ml-100k.item",
        analyzer="char_wb", ngram_range=(2, 4), min_df=2,
    )
    print(f"[recbole_milk]   title: character 2-4-gram TF-IDF -> SVD {title.shape[1]}", flush=True)
    genre, genre_names = _genre_rows(_column_by_item(item, "class", items, source / "ml-100k.item"))
    print(f"[recbole_milk]   genre: multi-hot over {len(genre_names)} genres", flush=True)
    bags = _kg_bags(source / "ml-100k.kg", source / "ml-100k.link", items)
    kg = _tfidf_svd_rows(bags, kg_dim, "kg", source / "ml-100k.kg", analyzer=_identity, binary=True)
    print(f"[recbole_milk]   kg: (relation, entity) TF-IDF -> SVD {kg.shape[1]}", flush=True)

    features = {"title": title, "genre": genre, "kg": kg}
    info = {
        "dataset": DATASET_NAME,
        "recipe_version": RECIPE_VERSION,
        "source": str(source),
        "users": int(inter["user_id:token"].nunique()),
        "items": len(items),
        "interactions": len(inter),
        "random_state": RANDOM_STATE,
        "genres": genre_names,
        "modalities": {
            name: {
                "file": MODALITY_FILES[name],
                "dim": int(matrix.shape[1]),
                "missing_items": int(np.isnan(matrix).all(axis=1).sum()),
            }
            for name, matrix in features.items()
        },
    }
    _write_atomically(target, inter, items, features, info)
    missing = ", ".join(f"{name} {entry['missing_items']}" for name, entry in info["modalities"].items())
    print(
        f"[recbole_milk] {DATASET_NAME} ready: {info['users']} users, {info['items']} items, "
        f"{info['interactions']} interactions; items missing a modality: {missing}.",
        flush=True,
    )


def _check_source(source: Path) -> None:
    missing = [name for name in SOURCE_FILES if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Cannot build {DATASET_NAME}: {source} lacks {', '.join(missing)}. It should be RecBole's ml-100k "
            "folder (recbole/dataset_example/ml-100k in the installed wheel); reinstall recbole==1.2.1."
        )


def _check_target(target: Path) -> None:
    """Refuse before any work to overwrite a folder that is neither empty nor an earlier build of ours."""
    if not target.exists():
        return
    if not target.is_dir():
        raise FileExistsError(
            f"Cannot build {DATASET_NAME} at {target}: it is a file. Remove it or pass another --data_path."
        )
    if any(target.iterdir()) and _read_build_info(target) is None:
        raise FileExistsError(
            f"Cannot build {DATASET_NAME} at {target}: the folder holds other files and no {BUILD_INFO}. "
            "Remove the folder or pass another --data_path."
        )


def _read_build_info(target: Path) -> Optional[Dict[str, Any]]:
    try:
        with open(target / BUILD_INFO, encoding="utf-8") as handle:
            info = json.load(handle)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("dataset") == DATASET_NAME else None


def _read_atomic(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)


def _column_name(frame: pd.DataFrame, field: str, path: Path) -> str:
    """The header entry whose name before ':type' is `field`."""
    for column in frame.columns:
        if column.split(":")[0] == field:
            return column
    raise ValueError(
        f"{path} has no '{field}' column (header: {list(frame.columns)}); expected RecBole's ml-100k files."
    )


def _implicit_interactions(path: Path) -> pd.DataFrame:
    """user, item and timestamp of every rating, under the plugin's .inter header; every rating is a positive."""
    inter = _read_atomic(path)
    columns = [_column_name(inter, field, path) for field in ("user_id", "item_id", "timestamp")]
    inter = inter[columns]
    inter.columns = ["user_id:token", "item_id:token", "timestamp:float"]
    return inter


def _item_order(item: pd.DataFrame, inter: pd.DataFrame, item_path: Path) -> List[str]:
    """Item tokens in feature-row order: the .item file's order, then any item only seen in .inter."""
    listed = item[_column_name(item, "item_id", item_path)].tolist()
    seen = set(listed)
    extra = [token for token in pd.unique(inter["item_id:token"]) if token not in seen]
    return listed + extra


def _column_by_item(item: pd.DataFrame, field: str, items: List[str], path: Path) -> List[str]:
    column = _column_name(item, field, path)
    values = dict(zip(item[_column_name(item, "item_id", path)], item[column]))
    return [values.get(token, "") for token in items]


def _text_docs(texts: List[str]) -> List[Optional[str]]:
    return [None if text.strip().lower() in MISSING_MARKERS else text for text in texts]


def _identity(tokens: List[str]) -> List[str]:
    return tokens


def _tfidf_svd_rows(docs: List[Any], dim: int, name: str, path: Path, **tfidf: Any) -> np.ndarray:
    """TF-IDF over the available documents, then truncated SVD; rows of missing documents (None) are NaN."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    present = [row for row, doc in enumerate(docs) if doc is not None]
    matrix = TfidfVectorizer(sublinear_tf=True, **tfidf).fit_transform([docs[row] for row in present])
    largest = min(matrix.shape) - 1
    if dim > largest:
        raise ValueError(
            f"{name} SVD dimension {dim} is too large for {path}: its TF-IDF matrix is {matrix.shape[0]} x "
            f"{matrix.shape[1]}, so the dimension must be at most {largest}."
        )
    reduced = TruncatedSVD(n_components=dim, random_state=RANDOM_STATE).fit_transform(matrix)
    rows = np.full((len(docs), dim), np.nan, dtype=np.float32)
    rows[present] = reduced.astype(np.float32)
    return rows


def _genre_rows(classes: List[str]) -> Tuple[np.ndarray, List[str]]:
    """Multi-hot rows over the known genres (sorted); movies with no known genre get a NaN row."""
    from sklearn.preprocessing import MultiLabelBinarizer

    genre_lists = [[g for g in text.split() if g.lower() not in MISSING_MARKERS] for text in classes]
    binarizer = MultiLabelBinarizer()
    rows = binarizer.fit_transform(genre_lists).astype(np.float32)
    rows[[not genres for genres in genre_lists]] = np.nan
    return rows, [str(name) for name in binarizer.classes_]


def _kg_bags(kg_path: Path, link_path: Path, items: List[str]) -> List[Optional[List[str]]]:
    """Each linked movie's facts as tokens 'relation>tail' (movie is head) or 'relation<head' (movie is tail)."""
    link = _read_atomic(link_path)
    entities = link[_column_name(link, "entity_id", link_path)]
    entity_to_item = dict(zip(entities, link[_column_name(link, "item_id", link_path)]))
    kg = _read_atomic(kg_path)
    head, relation, tail = (kg[_column_name(kg, field, kg_path)] for field in ("head_id", "relation_id", "tail_id"))
    as_head = head.isin(entity_to_item.keys())
    as_tail = tail.isin(entity_to_item.keys())
    facts = pd.concat([
        pd.DataFrame({"item": head[as_head].map(entity_to_item), "token": relation[as_head] + ">" + tail[as_head]}),
        pd.DataFrame({"item": tail[as_tail].map(entity_to_item), "token": relation[as_tail] + "<" + head[as_tail]}),
    ])
    bags = facts.groupby("item", sort=False)["token"].apply(list).to_dict()
    return [bags.get(token) for token in items]


def _write_atomically(
    target: Path, inter: pd.DataFrame, items: List[str], features: Dict[str, np.ndarray], info: Dict[str, Any]
) -> None:
    # An earlier recipe's build is replaced; if another builder of this recipe finishes first, its (identical)
    # result is kept and this one discarded.
    replace = target.exists() and not is_built(target)
    remove_stale_temporaries(target.parent)
    with atomic_directory(target, replace=replace) as staging:
        os.chmod(staging, 0o755)  # the cache may be shared between users
        with atomic_write(staging / f"{DATASET_NAME}.inter", "w", encoding="utf-8") as handle:
            inter.to_csv(handle, sep="\t", index=False)
        rows = pd.DataFrame({ITEM_ROW_HEADER[0]: items, ITEM_ROW_HEADER[1]: np.arange(len(items))})
        with atomic_write(staging / ITEM_ROW_FILE, "w", encoding="utf-8") as handle:
            rows.to_csv(handle, sep="\t", index=False)
        for name, matrix in features.items():
            save_npy(staging / MODALITY_FILES[name], matrix)
        # Written last: its presence marks a complete build.
        write_json(staging / BUILD_INFO, info, indent=2)

