"""The embedded ml-100k-mm builder: layout, missing modalities, determinism, reuse and atomic concurrent builds."""
import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recbole_milk.data import embedded
from recbole_milk.data.embedded import (
    build_ml100k_mm,
    ensure_embedded_dataset,
    is_built,
)

ITEMS = [
    ("1", "Star Wars", "Action Adventure Sci-Fi"),
    ("2", "Star Trek: First Contact", "Action Sci-Fi"),
    ("3", "Return of the Jedi", "Action Adventure Romance"),
    ("4", "Toy Story", "Animation Comedy"),
    ("5", "unkonwn", "unknown"),
    ("6", "Good Morning", "unknown"),
    ("7", "Star Kid", "Adventure Sci-Fi"),
]
LINKS = {"1": "m.sw", "2": "m.st", "3": "m.rj", "4": "m.ts"}
KG = [
    ("m.sw", "film.film.directed_by", "m.lucas"),
    ("m.rj", "film.film.directed_by", "m.marquand"),
    ("m.sw", "film.film.genre", "m.scifi"),
    ("m.st", "film.film.genre", "m.scifi"),
    ("m.rj", "film.film.genre", "m.scifi"),
    ("m.ts", "film.film.genre", "m.anim"),
    ("m.ford", "film.actor.film", "m.sw"),
    ("m.ford", "film.actor.film", "m.rj"),
    ("m.rj", "film.film.sequel", "m.sw"),
    ("m.ts", "film.film.language", "m.en"),
    ("m.sw", "film.film.language", "m.en"),
]
INTERS = [("10", "1", 5, 100), ("10", "2", 3, 101), ("11", "1", 4, 102), ("11", "3", 2, 103),
          ("12", "4", 5, 104), ("12", "5", 1, 105), ("13", "6", 3, 106), ("13", "7", 4, 107), ("10", "7", 4, 108)]
SMALL = {"title_dim": 2, "kg_dim": 2}


def write_fake_ml100k(folder: Path) -> Path:
    folder.mkdir(parents=True)
    with open(folder / "ml-100k.inter", "w") as out:
        out.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        out.writelines(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in INTERS)
    with open(folder / "ml-100k.item", "w") as out:
        out.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n")
        out.writelines(f"{i}\t{title}\t1990\t{genres}\n" for i, title, genres in ITEMS)
    with open(folder / "ml-100k.link", "w") as out:
        out.write("item_id:token\tentity_id:token\n")
        out.writelines(f"{i}\t{e}\n" for i, e in LINKS.items())
    with open(folder / "ml-100k.kg", "w") as out:
        out.write("head_id:token\trelation_id:token\ttail_id:token\n")
        out.writelines(f"{h}\t{r}\t{t}\n" for h, r, t in KG)
    return folder


@pytest.fixture
def source(tmp_path):
    return write_fake_ml100k(tmp_path / "ml-100k")


def load(target: Path):
    rows = pd.read_csv(target / "item_rows.tsv", sep="\t", dtype=str)
    row_of = dict(zip(rows["item_id"], rows["row"].astype(int)))
    return row_of, {name: np.load(target / f"{name}.npy") for name in ("title", "genre", "kg")}


def test_build_writes_inter_row_map_and_float32_features(source, tmp_path):
    target = tmp_path / "data" / "ml-100k-mm"
    build_ml100k_mm(target, source, **SMALL)
    inter = pd.read_csv(target / "ml-100k-mm.inter", sep="\t", dtype=str)
    assert list(inter.columns) == ["user_id:token", "item_id:token", "timestamp:float"]
    assert inter.values.tolist() == [[u, i, str(t)] for u, i, _, t in INTERS]
    row_of, features = load(target)
    assert row_of == {token: row for row, (token, _, _) in enumerate(ITEMS)}
    assert {name: matrix.shape for name, matrix in features.items()} == {
        "title": (7, 2), "genre": (7, 6), "kg": (7, 2)}
    assert all(matrix.dtype == np.float32 for matrix in features.values())
    info = json.loads((target / "build_info.json").read_text())
    assert (info["users"], info["items"], info["interactions"]) == (4, 7, len(INTERS))
    assert is_built(target)


def test_movies_without_link_miss_only_the_kg_modality(source, tmp_path):
    target = tmp_path / "ml-100k-mm"
    build_ml100k_mm(target, source, **SMALL)
    row_of, features = load(target)
    kg_missing = np.isnan(features["kg"]).all(axis=1)
    assert sorted(token for token, row in row_of.items() if kg_missing[row]) == ["5", "6", "7"]
    assert np.isfinite(features["kg"][[row_of[t] for t in LINKS]]).all()
    assert np.isfinite(features["title"][row_of["7"]]).all() and np.isfinite(features["genre"][row_of["7"]]).all()
    info = json.loads((target / "build_info.json").read_text())
    assert info["modalities"]["kg"]["missing_items"] == 3


def test_unknown_title_and_genre_markers_are_missing_rows(source, tmp_path):
    target = tmp_path / "ml-100k-mm"
    build_ml100k_mm(target, source, **SMALL)
    row_of, features = load(target)
    title_missing = np.isnan(features["title"]).all(axis=1)
    genre_missing = np.isnan(features["genre"]).all(axis=1)
    assert [t for t, r in row_of.items() if title_missing[r]] == ["5"]
    assert sorted(t for t, r in row_of.items() if genre_missing[r]) == ["5", "6"]
    assert not np.isnan(features["title"][~title_missing]).any()


def test_genres_are_multi_hot_over_the_known_genres(source, tmp_path):
    target = tmp_path / "ml-100k-mm"
    build_ml100k_mm(target, source, **SMALL)
    row_of, features = load(target)
    names = json.loads((target / "build_info.json").read_text())["genres"]
    assert names == ["Action", "Adventure", "Animation", "Comedy", "Romance", "Sci-Fi"]
    for token, _, genres in ITEMS:
        if "unknown" not in genres:
            expected = [1.0 if name in genres.split() else 0.0 for name in names]
            assert features["genre"][row_of[token]].tolist() == expected


def test_build_is_deterministic(source, tmp_path):
    build_ml100k_mm(tmp_path / "a" / "ml-100k-mm", source, **SMALL)
    build_ml100k_mm(tmp_path / "b" / "ml-100k-mm", source, **SMALL)
    _, first = load(tmp_path / "a" / "ml-100k-mm")
    _, second = load(tmp_path / "b" / "ml-100k-mm")
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


def test_ensure_builds_once_then_reuses(source, tmp_path, monkeypatch):
    target = tmp_path / "ml-100k-mm"
    config = {"dataset": "ml-100k-mm", "data_path": str(target)}
    calls = []
    real_build = embedded.build_ml100k_mm
    monkeypatch.setattr(embedded, "build_ml100k_mm", lambda t: calls.append(t) or real_build(t, source, **SMALL))
    ensure_embedded_dataset(config)
    stamp = (target / "kg.npy").stat().st_mtime_ns
    ensure_embedded_dataset(config)
    assert calls == [target]
    assert (target / "kg.npy").stat().st_mtime_ns == stamp


def test_ensure_rebuilds_a_build_of_an_older_recipe(source, tmp_path, monkeypatch):
    target = tmp_path / "ml-100k-mm"
    build_ml100k_mm(target, source, **SMALL)
    info = json.loads((target / "build_info.json").read_text())
    info["recipe_version"] = embedded.RECIPE_VERSION - 1
    (target / "build_info.json").write_text(json.dumps(info))
    (target / "kg.npy").write_bytes(b"stale")
    real_build = embedded.build_ml100k_mm
    monkeypatch.setattr(embedded, "build_ml100k_mm", lambda t: real_build(t, source, **SMALL))
    ensure_embedded_dataset({"dataset": "ml-100k-mm", "data_path": str(target)})
    assert is_built(target)
    assert np.load(target / "kg.npy").shape == (7, 2)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_ensure_rejects_other_datasets(tmp_path):
    with pytest.raises(ValueError, match="ml-100k-mm"):
        ensure_embedded_dataset({"dataset": "ml-100k", "data_path": str(tmp_path)})


def test_concurrent_builders_leave_one_complete_dataset_and_no_temp_folders(source, tmp_path):
    target = tmp_path / "cache" / "ml-100k-mm"
    errors = []

    def build():
        try:
            build_ml100k_mm(target, source, **SMALL)
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert is_built(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["ml-100k-mm"]


def test_a_builder_that_loses_the_race_keeps_the_winners_build(source, tmp_path):
    target = tmp_path / "ml-100k-mm"
    build_ml100k_mm(target, source, **SMALL)
    stamp = (target / "build_info.json").stat().st_mtime_ns
    build_ml100k_mm(target, source, **SMALL)
    assert (target / "build_info.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k", "ml-100k-mm"]


def test_refuses_a_folder_holding_other_files_before_any_work(source, tmp_path):
    target = tmp_path / "ml-100k-mm"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="ml-100k-mm.*other files"):
        build_ml100k_mm(target, source, **SMALL)
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]


def test_missing_source_file_is_named(source, tmp_path):
    (source / "ml-100k.kg").unlink()
    with pytest.raises(FileNotFoundError, match="ml-100k.kg"):
        build_ml100k_mm(tmp_path / "ml-100k-mm", source, **SMALL)


def test_too_large_svd_dimension_is_a_clear_error(source, tmp_path):
    with pytest.raises(ValueError, match="kg SVD dimension 50 is too large"):
        build_ml100k_mm(tmp_path / "ml-100k-mm", source, title_dim=2, kg_dim=50)
    assert not (tmp_path / "ml-100k-mm").exists()


@pytest.fixture(scope="module")
def wheel_build(tmp_path_factory):
    target = tmp_path_factory.mktemp("wheel") / "ml-100k-mm"
    build_ml100k_mm(target)
    return target


def test_wheel_build_has_the_documented_recipe(wheel_build):
    info = json.loads((wheel_build / "build_info.json").read_text())
    assert (info["users"], info["items"], info["interactions"]) == (943, 1682, 100000)
    dims = {name: entry["dim"] for name, entry in info["modalities"].items()}
    missing = {name: entry["missing_items"] for name, entry in info["modalities"].items()}
    assert dims == {"title": 32, "genre": 18, "kg": 64}
    assert missing == {"title": 1, "genre": 2, "kg": 84}
    row_of, features = load(wheel_build)
    assert np.isnan(features["title"][row_of["267"]]).all()
    # Every present row carries signal: none collapses to a zero vector after the SVD.
    for matrix in features.values():
        present = matrix[~np.isnan(matrix).all(axis=1)]
        assert np.isfinite(present).all() and (np.linalg.norm(present, axis=1) > 1e-3).all()


def test_wheel_build_loads_in_recbole_with_the_shipped_dataset_yaml(wheel_build, tmp_path):
    from recbole.data import create_dataset

    from recbole_milk.config import Config

    config = Config(model="BPR", dataset="ml-100k-mm", config_dict={
        "data_path": str(wheel_build.parent), "checkpoint_dir": str(tmp_path / "saved")})
    assert config["modalities"] == {"title": "title.npy", "genre": "genre.npy", "kg": "kg.npy"}
    assert config["item_row_file"] == "item_rows.tsv"
    dataset = create_dataset(config)
    assert (dataset.user_num - 1, dataset.item_num - 1, dataset.inter_num) == (943, 1682, 100000)
    row_of, _ = load(wheel_build)
    assert set(dataset.field2id_token["item_id"][1:]) == set(row_of)
