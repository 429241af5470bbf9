"""create_dataset / data_preparation: dataset choice, cache, split export, built-in models on the new-item split."""
import json
import sys
import types
from pathlib import Path

import pytest
from fixtures import toy_config, write_toy_dataset
from recbole.data.dataloader import TrainDataLoader, UserDataLoader
from recbole.data.dataset import Dataset
from recbole.utils import get_trainer, init_seed

from recbole_milk.data.dataset import ROLE_WARM, DataError, NewItemDataset
from recbole_milk.data.utils import create_dataset, data_preparation
from recbole_milk.utils import get_model


@pytest.fixture
def toy(tmp_path):
    return write_toy_dataset(tmp_path / "data")


def cache_file(config_dict):
    return Path(config_dict["checkpoint_dir"]) / f"{config_dict['dataset']}-NewItemDataset.pth"


@pytest.mark.parametrize("model", ["BPR", "LightGCN", "Pop", "Random", "ItemKNN", "MultiVAE"])
def test_builtin_models_train_and_evaluate_on_the_new_item_split(toy, model):
    config = toy_config(toy, model=model, epochs=1, eval_step=1, train_batch_size=128)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    assert isinstance(dataset, NewItemDataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    assert isinstance(train_data, UserDataLoader if model == "MultiVAE" else TrainDataLoader)
    recommender = get_model(model)(config, train_data.dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, recommender)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    assert 0.0 <= result["ndcg@10"] <= 1.0


def test_bpr_runs_on_a_dataset_without_modalities(tmp_path):
    config = toy_config(write_toy_dataset(tmp_path / "data", n_modalities=0), epochs=1)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    assert dataset.item_availability.shape[1] == 0 and valid_data.candidate_items.sum() == 10
    recommender = get_model("BPR")(config, train_data.dataset)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, recommender)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)


def test_models_see_the_shared_content_attributes(toy):
    config = toy_config(toy)
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    model_view = train_data.dataset
    assert model_view.item_features is dataset.item_features and model_view.item_role is dataset.item_role
    assert (dataset.item_role[model_view.inter_feat["item_id"]] == ROLE_WARM).all()
    assert valid_data._dataset.item_group is dataset.item_group


def test_non_general_models_get_recbole_datasets(toy):
    config = toy_config(toy, model="FM", eval_args={"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO",
                                                     "group_by": "user", "mode": "labeled"})
    dataset = create_dataset(config)
    assert isinstance(dataset, Dataset) and not isinstance(dataset, NewItemDataset)


def test_ml_100k_mm_is_built_before_loading(tmp_path, monkeypatch):
    config_dict = write_toy_dataset(tmp_path / "data", name="ml-100k-mm")
    seen = []
    fake = types.ModuleType("recbole_milk.data.embedded")
    fake.ensure_embedded_dataset = lambda config: seen.append(config["data_path"])
    monkeypatch.setitem(sys.modules, "recbole_milk.data.embedded", fake)
    # The toy layout maps row r to item token r; ml-100k-mm's own yaml names a row file.
    dataset = create_dataset(toy_config(config_dict, item_row_file=None))
    assert seen == [str(tmp_path / "data" / "ml-100k-mm")] and dataset.item_num == 51


def test_cached_dataset_is_reused_when_nothing_changed(toy, built_count):
    first = create_dataset(toy_config(toy, save_dataset=True))
    second = create_dataset(toy_config(toy, save_dataset=True))
    assert len(built_count) == 1 and cache_file(toy).is_file()
    assert (second.item_role == first.item_role).all()
    assert not [p for p in cache_file(toy).parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("option, value", [
    ("missing_setting", "MTMT"), ("cold_item_ratio", 0.3), ("imputation", "zero"), ("split_seed", 7),
    ("test_missing_ratio", 0.2), ("missing_count_probs", [0.5, 0.5]),
    ("eval_args", {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"}),
])
def test_cache_is_rebuilt_when_a_plugin_data_option_changes(toy, built_count, option, value):
    create_dataset(toy_config(toy, save_dataset=True))
    create_dataset(toy_config(toy, save_dataset=True, **{option: value}))
    assert len(built_count) == 2
    create_dataset(toy_config(toy, save_dataset=True, **{option: value}))
    assert len(built_count) == 2  # and the rebuilt one is cached under its own key


def test_cache_is_rebuilt_when_a_feature_file_is_rewritten(toy, built_count):
    create_dataset(toy_config(toy, save_dataset=True))
    feature_path = Path(toy["data_path"]) / "toy" / toy["modalities"]["visual"]
    feature_path.write_bytes(feature_path.read_bytes())
    create_dataset(toy_config(toy, save_dataset=True))
    assert len(built_count) == 2


def test_bad_input_leaves_no_cache(toy):
    feature_path = Path(toy["data_path"]) / "toy" / toy["modalities"]["visual"]
    feature_path.unlink()
    with pytest.raises(DataError, match="visual_feat.npy"):
        create_dataset(toy_config(toy, save_dataset=True))
    assert not cache_file(toy).parent.exists() or not any(cache_file(toy).parent.iterdir())


def test_split_export_file_gets_the_split_in_use(toy, tmp_path):
    export = tmp_path / "exports" / "split.json"
    config = toy_config(toy, split_export_file=str(export))
    dataset = create_dataset(config)
    data_preparation(config, dataset)
    content = json.loads(export.read_text())
    assert (len(content["warm"]), len(content["valid"]), len(content["test"])) == (40, 5, 5)
    again = create_dataset(toy_config(toy, cold_item_file=str(export), seed=11))
    assert (again.item_role == dataset.item_role).all()
