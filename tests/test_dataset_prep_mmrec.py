"""dataset_prep/mmrec.py: MMRec layout -> plugin layout, round-tripped on a fixture."""
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "dataset_prep" / "mmrec.py"
spec = importlib.util.spec_from_file_location("mmrec", SCRIPT)
mmrec = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mmrec)

# (userID, itemID, rating, timestamp, x_label); itemID 6 has features but no interaction.
INTERS = [(0, 3, 5, 900, 0), (0, 1, 4, 901, 0), (1, 0, 3, 902, 1), (2, 7, 1, 903, 2), (2, 3, 2, 904, 0),
          (3, 2, 5, 905, 0), (4, 5, 4, 906, 1), (4, 4, 3, 907, 0), (1, 3, 5, 908, 2), (3, 3, 4, 909, 0)]
N_ROWS = 8


def write_mmrec(folder: Path, name: str = "mini", feats=("image", "text")) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.inter", "w") as out:
        out.write("userID\titemID\trating\ttimestamp\tx_label\n")
        out.writelines("\t".join(map(str, row)) + "\n" for row in INTERS)
    rng = np.random.default_rng(0)
    arrays = {
        "image": rng.normal(size=(N_ROWS, 6)).astype(np.float16),
        "text": rng.normal(size=(N_ROWS, 4)).astype(np.float32),
        "audio": rng.normal(size=(N_ROWS, 3)).astype(np.float16),
    }
    arrays["text"][3] = 0.0  # MMRec's way of saying "no text" for item 3
    arrays["image"][5] = np.nan
    for kind in feats:
        np.save(folder / f"{kind}_feat.npy", arrays[kind])
    return {kind: arrays[kind] for kind in feats}


def test_round_trip_keeps_interactions_items_and_feature_rows(tmp_path):
    source = write_mmrec(tmp_path / "src")
    stats = mmrec.convert_mmrec(tmp_path / "src", "mini", tmp_path / "out")
    folder = tmp_path / "out" / "mini"
    assert sorted(p.name for p in folder.iterdir()) == ["mini.inter", "mini.yaml", "text.npy", "visual.npy"]

    inter = pd.read_csv(folder / "mini.inter", sep="\t", dtype=str)
    assert list(inter.columns) == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    assert inter.values.tolist() == [[str(u), str(i), str(r), str(t)] for u, i, r, t, _ in INTERS]

    visual, text = np.load(folder / "visual.npy"), np.load(folder / "text.npy")
    assert visual.dtype == text.dtype == np.float32
    assert visual.shape == (N_ROWS, 6) and text.shape == (N_ROWS, 4)
    # Token "r" keeps row r: compare every interacted item's row with the source row.
    for token in inter["item_id:token"].unique():
        row = int(token)
        np.testing.assert_array_equal(visual[row], source["image"][row].astype(np.float32))
        if row != 3:
            np.testing.assert_array_equal(text[row], source["text"][row])
    assert np.isnan(text[3]).all() and np.isnan(visual[5]).all()

    assert (stats["users"], stats["items"], stats["interactions"], stats["feature_rows"]) == (5, 7, 10, N_ROWS)
    assert stats["modalities"] == {
        "visual": {"source": "image_feat.npy", "file": "visual.npy", "dim": 6, "missing_items": 1},
        "text": {"source": "text_feat.npy", "file": "text.npy", "dim": 4, "missing_items": 1},
    }


def test_generated_yaml_loads_the_dataset_in_recbole(tmp_path):
    from recbole.data import create_dataset

    from recbole_milk.config import Config

    write_mmrec(tmp_path / "src")
    mmrec.convert_mmrec(tmp_path / "src", "mini", tmp_path / "out")
    config_file = tmp_path / "out" / "mini" / "mini.yaml"
    assert yaml.safe_load(config_file.read_text()) == {
        "load_col": {"inter": ["user_id", "item_id"]},
        "modalities": {"visual": "visual.npy", "text": "text.npy"},
    }
    config = Config(model="BPR", dataset="mini", config_file_list=[str(config_file)], config_dict={
        "data_path": str(tmp_path / "out"), "checkpoint_dir": str(tmp_path / "saved")})
    assert config["modalities"] == {"visual": "visual.npy", "text": "text.npy"}
    dataset = create_dataset(config)
    assert (dataset.user_num - 1, dataset.item_num - 1, dataset.inter_num) == (5, 7, 10)
    assert set(dataset.field2id_token["item_id"][1:]) == {str(i) for _, i, _, _, _ in INTERS}


def test_modalities_come_from_the_files_present_in_role_order(tmp_path):
    write_mmrec(tmp_path / "src", feats=("text", "audio", "image"))
    stats = mmrec.convert_mmrec(tmp_path / "src", "mini", tmp_path / "out")
    assert list(stats["modalities"]) == ["visual", "acoustic", "text"]
    write_mmrec(tmp_path / "audio_only", feats=("audio",))
    stats = mmrec.convert_mmrec(tmp_path / "audio_only", "mini", tmp_path / "out2")
    assert list(stats["modalities"]) == ["acoustic"]
    assert "acoustic: acoustic.npy" in (tmp_path / "out2" / "mini" / "mini.yaml").read_text()


def test_inter_without_rating_or_timestamp_keeps_ids_only(tmp_path):
    src = tmp_path / "src"
    write_mmrec(src, name="tt", feats=("image",))
    (src / "tt.inter").write_text("userID\titemID\tx_label\n" + "".join(f"{u}\t{i}\t0\n" for u, i, *_ in INTERS))
    mmrec.convert_mmrec(src, "tt", tmp_path / "out")
    header = (tmp_path / "out" / "tt" / "tt.inter").read_text().splitlines()[0]
    assert header == "user_id:token\titem_id:token"


def test_keep_zero_rows_keeps_all_zero_features(tmp_path):
    write_mmrec(tmp_path / "src")
    stats = mmrec.convert_mmrec(tmp_path / "src", "mini", tmp_path / "out", zero_rows_missing=False)
    assert stats["modalities"]["text"]["missing_items"] == 0
    assert (np.load(tmp_path / "out" / "mini" / "text.npy")[3] == 0).all()


def test_shorter_feature_file_is_padded_with_missing_rows(tmp_path):
    src = tmp_path / "src"
    write_mmrec(src)
    np.save(src / "audio_feat.npy", np.ones((N_ROWS + 2, 3), dtype=np.float16))
    stats = mmrec.convert_mmrec(src, "mini", tmp_path / "out")
    visual = np.load(tmp_path / "out" / "mini" / "visual.npy")
    assert stats["feature_rows"] == N_ROWS + 2 and visual.shape == (N_ROWS + 2, 6)
    assert np.isnan(visual[N_ROWS:]).all()


def test_inter_file_is_found_when_named_otherwise(tmp_path):
    write_mmrec(tmp_path / "src", name="baby")
    stats = mmrec.convert_mmrec(tmp_path / "src", "mybaby", tmp_path / "out")
    assert stats["interactions"] == len(INTERS)
    assert (tmp_path / "out" / "mybaby" / "mybaby.inter").is_file()


@pytest.mark.parametrize("breakage, message", [
    (lambda src: (src / "mini.inter").write_text("user\titemID\n0\t1\n"), r"mini.inter lacks column\(s\) \['userID'\]"),
    (lambda src: (src / "mini.inter").write_text("userID\titemID\n0\tx7\n"), r"mini.inter line 2: item_id 'x7'"),
    (lambda src: np.save(src / "image_feat.npy", np.ones((5, 6))), r"image_feat.npy has 5 rows .* itemID up to 7"),
    (lambda src: np.save(src / "image_feat.npy", np.ones(8)), r"image_feat.npy holds a 1-d"),
    (lambda src: np.save(src / "image_feat.npy", np.array([[1.0, np.nan]] * 8)), r"image_feat.npy row 0 mixes"),
    (lambda src: [p.unlink() for p in src.glob("*_feat.npy")], r"no feature file \*_feat.npy"),
])
def test_bad_input_names_the_file_and_writes_nothing(tmp_path, breakage, message):
    src = tmp_path / "src"
    write_mmrec(src)
    breakage(src)
    with pytest.raises(mmrec.ConversionError, match=message):
        mmrec.convert_mmrec(src, "mini", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite(tmp_path):
    write_mmrec(tmp_path / "src")
    mmrec.convert_mmrec(tmp_path / "src", "mini", tmp_path / "out")
    with pytest.raises(mmrec.ConversionError, match="already exists.*--overwrite"):
        mmrec.convert_mmrec(tmp_path / "src", "mini", tmp_path / "out")
    mmrec.convert_mmrec(tmp_path / "src", "mini", tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mini"]


def test_cli_prints_statistics_and_the_run_command(tmp_path, capsys):
    write_mmrec(tmp_path / "src")
    stats = mmrec.main(["--src", str(tmp_path / "src"), "--name", "mini", "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert stats["users"] == 5
    assert "5 users, 7 items with interactions, 10 interactions" in printed
    out = tmp_path / "out"
    assert f"--dataset=mini --data_path={out}\n" in printed + "\n"


def test_converted_dataset_needs_only_its_name_and_data_path(tmp_path):
    from recbole_milk.config import Config

    write_mmrec(tmp_path / "src")
    mmrec.convert_mmrec(tmp_path / "src", "mini", tmp_path / "out")
    config = Config(model="MILK", dataset="mini", config_dict={"data_path": str(tmp_path / "out")})
    assert config["modalities"] == {"visual": "visual.npy", "text": "text.npy"}


def test_cli_reports_errors_on_stderr_with_exit_code_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        mmrec.run_cli(lambda: mmrec.main(["--src", str(tmp_path / "nowhere"), "--name", "mini",
                                          "--out", str(tmp_path / "out")]))
    assert stopped.value.code == 2
    assert "is not a folder" in capsys.readouterr().err
