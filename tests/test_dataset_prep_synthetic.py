"""dataset_prep/synthetic.py: known factors, modalities of different quality, preference by the factors."""
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "dataset_prep" / "synthetic.py"
spec = importlib.util.spec_from_file_location("synthetic", SCRIPT)
synthetic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(synthetic)

SMALL = dict(users=300, items=400, interactions=3000, factors=8, dims=[16, 16], noise=[0.1, 2.0])


def build(tmp_path, name="syn", **overrides):
    stats = synthetic.generate(synthetic.SyntheticSpec(**{**SMALL, **overrides}), tmp_path, name, log=lambda _: None)
    return stats, tmp_path / name


def test_interactions_are_distinct_pairs_with_the_requested_count(tmp_path):
    stats, folder = build(tmp_path)
    inter = pd.read_csv(folder / "syn.inter", sep="\t")
    assert list(inter.columns) == ["user_id:token", "item_id:token"]
    assert len(inter) == stats["interactions"] == 3000
    assert not inter.duplicated().any()
    assert inter["user_id:token"].nunique() == 300 and inter["item_id:token"].max() < 400


def test_users_choose_items_they_prefer_by_the_factors(tmp_path):
    _, folder = build(tmp_path)
    inter = pd.read_csv(folder / "syn.inter", sep="\t").to_numpy()
    users, items = np.load(folder / "user_factors.npy"), np.load(folder / "item_factors.npy")
    chosen = (users[inter[:, 0]] * items[inter[:, 1]]).sum(1).mean()
    random_items = np.random.default_rng(0).integers(0, len(items), len(inter))
    assert chosen > (users[inter[:, 0]] * items[random_items]).sum(1).mean() + 0.1


def test_a_less_noisy_modality_predicts_the_factors_better(tmp_path):
    _, folder = build(tmp_path)
    factors = np.load(folder / "item_factors.npy")

    def explained(modality):
        x = np.load(folder / f"{modality}.npy")
        coef, *_ = np.linalg.lstsq(x, factors, rcond=None)
        return 1 - ((x @ coef - factors) ** 2).sum() / ((factors - factors.mean(0)) ** 2).sum()

    assert explained("strong") > explained("weak") + 0.2


def test_real_missingness_is_an_all_nan_row_at_the_requested_rate(tmp_path):
    _, folder = build(tmp_path, missing_rates=[0.25, 0.0])
    strong, weak = np.load(folder / "strong.npy"), np.load(folder / "weak.npy")
    missing = np.isnan(strong).all(1)
    assert abs(missing.mean() - 0.25) < 0.07 and not np.isnan(strong[~missing]).any()
    assert not np.isnan(weak).any()


def test_the_same_seed_gives_the_same_dataset_and_another_seed_another(tmp_path):
    _, first = build(tmp_path / "a")
    _, again = build(tmp_path / "b")
    _, other = build(tmp_path / "c", seed=1)
    assert (first / "syn.inter").read_bytes() == (again / "syn.inter").read_bytes()
    assert (first / "syn.inter").read_bytes() != (other / "syn.inter").read_bytes()
    assert np.array_equal(np.load(first / "weak.npy"), np.load(again / "weak.npy"))


def test_the_folder_runs_through_the_plugin_by_name_and_data_path(tmp_path):
    from recbole_milk.quick_start import run_recbole_milk

    build(tmp_path)
    result = run_recbole_milk("MILK", "syn", config_dict={
        "data_path": str(tmp_path), "epochs": 2, "eval_step": 1, "checkpoint_dir": str(tmp_path / "saved"),
        "log_dir": str(tmp_path / "log"), "tensorboard_dir": str(tmp_path / "tb"), "save_dataset": False,
        "state": "WARNING", "show_progress": False})
    assert result["config"]["modalities"] == {"strong": "strong.npy", "weak": "weak.npy"}
    assert set(result["test_result_by_group"]) == {"complete", "missing_1"}


@pytest.mark.parametrize("overrides, named", [
    (dict(interactions=10), "--interactions"),
    (dict(noise=[0.1]), "--noise"),
    (dict(missing_rates=[1.0, 0.0]), "--missing_rates"),
])
def test_parameters_that_cannot_make_a_dataset_are_named(tmp_path, overrides, named):
    with pytest.raises(synthetic.SyntheticError, match=named):
        build(tmp_path, **overrides)
    assert not (tmp_path / "syn").exists()


def test_float16_feature_files_are_half_the_size_and_read_back_as_the_same_float32_rows(tmp_path, monkeypatch):
    from recbole_milk.data import features

    _, wide = build(tmp_path / "a")
    stats, half = synthetic.generate(synthetic.SyntheticSpec(**SMALL), tmp_path / "b", "syn", log=lambda _: None,
                                     feature_dtype="float16"), tmp_path / "b" / "syn"
    assert stats["feature_dtype"] == "float16"
    assert np.load(half / "strong.npy").dtype == np.float16
    assert (half / "strong.npy").stat().st_size < 0.6 * (wide / "strong.npy").stat().st_size
    rows = np.arange(400)[::-1].copy()
    monkeypatch.setattr(features, "ROW_CHUNK", 7)  # several chunks, the last one short
    full = features.read_matrix(str(half / "strong.npy"), rows, "strong", rows.astype(str), "syn")
    assert full.dtype == np.float32 and full.shape == (401, 16) and not full[0].any()
    expected = np.load(wide / "strong.npy")[rows].astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(full[1:], expected)


def test_an_unknown_feature_dtype_is_named(tmp_path):
    with pytest.raises(synthetic.SyntheticError, match="--feature_dtype"):
        synthetic.generate(synthetic.SyntheticSpec(**SMALL), tmp_path, "syn", feature_dtype="int8")
