import sys
from pathlib import Path

import pytest
import yaml
from fixtures import write_toy_dataset

from recbole_milk import config as config_module
from recbole_milk.config import Config, properties_dir
from recbole_milk.options import ConfigError


@pytest.fixture
def plugin_properties(tmp_path, monkeypatch):
    """A private copy of properties/ whose model and dataset yaml the test can write."""
    root = tmp_path / "properties"
    (root / "model").mkdir(parents=True)
    (root / "dataset").mkdir()
    (root / "overall.yaml").write_text((properties_dir() / "overall.yaml").read_text())
    monkeypatch.setattr(config_module, "properties_dir", lambda: root)
    return root


def _config(**kwargs):
    return Config(model="BPR", dataset="ml-100k", **kwargs)


def test_plugin_overall_defaults_override_recbole_defaults():
    config = _config()
    assert config["seed"] == 2023  # RecBole's own default is 2020
    assert config["valid_metric"] == "NDCG@10"
    assert list(config["eval_args"]["split"]) == ["COLD"]


def test_layering_order_is_overall_then_model_then_dataset_then_user(plugin_properties, tmp_path, monkeypatch):
    (plugin_properties / "overall.yaml").write_text(
        (plugin_properties / "overall.yaml").read_text() + "\nlayer_probe: overall\nembedding_size: 8\n")
    (plugin_properties / "model" / "BPR.yaml").write_text("layer_probe: model\nembedding_size: 16\nmodel_only: 1\n")
    (plugin_properties / "dataset" / "ml-100k.yaml").write_text("layer_probe: dataset\n")
    assert _config()["layer_probe"] == "dataset"
    assert _config()["embedding_size"] == 16  # model yaml beats overall, and RecBole's BPR.yaml (64)
    user_file = tmp_path / "user.yaml"
    user_file.write_text(yaml.safe_dump({"layer_probe": "file", "model_only": 2}))
    assert _config(config_file_list=[str(user_file)])["layer_probe"] == "file"
    both = _config(config_file_list=[str(user_file)], config_dict={"layer_probe": "dict"})
    assert both["layer_probe"] == "dict" and both["model_only"] == 2
    monkeypatch.setattr(sys, "argv", ["run", "--layer_probe=cmd"])
    assert _config(config_file_list=[str(user_file)], config_dict={"layer_probe": "dict"})["layer_probe"] == "cmd"


def test_command_line_values_are_typed_like_recbole(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["run", "--learning_rate=0.01", "--topk=[5,10]", "--cold_item_ratio=0.3"])
    config = _config()
    assert config["learning_rate"] == 0.01 and config["topk"] == [5, 10] and config["cold_item_ratio"] == 0.3


def test_model_name_is_case_insensitive_and_canonical():
    assert Config(model="bpr", dataset="ml-100k")["model"] == "BPR"


def test_invalid_option_is_rejected_before_any_data_is_read():
    with pytest.raises(ConfigError, match="cold_item_ratio.*1.5"):
        _config(config_dict={"cold_item_ratio": 1.5})
    with pytest.raises(ConfigError, match="candidate_pool.*all_new, split_new"):
        _config(config_dict={"candidate_pool": "everything"})


def test_embedded_dataset_defaults_to_the_user_cache(embedded_cache):
    config = Config(model="BPR", dataset="ml-100k-mm")
    assert config["data_path"] == str(embedded_cache / "ml-100k-mm")
    explicit = Config(model="BPR", dataset="ml-100k-mm", config_dict={"data_path": "elsewhere"})
    assert explicit["data_path"].startswith("elsewhere")


def test_yaml_defaults_ship_with_the_package():
    assert (properties_dir() / "overall.yaml").is_file()


def test_a_dataset_folder_yaml_sits_between_plugin_yaml_and_user(plugin_properties, tmp_path):
    (plugin_properties / "dataset" / "mine.yaml").write_text("layer_probe: plugin\nother_probe: plugin\n")
    folder = tmp_path / "data" / "mine"
    folder.mkdir(parents=True)
    (folder / "mine.yaml").write_text("layer_probe: folder\n")
    config = Config(model="BPR", dataset="mine", config_dict={"data_path": str(tmp_path / "data")})
    assert config["layer_probe"] == "folder" and config["other_probe"] == "plugin"
    user = Config(model="BPR", dataset="mine", config_dict={"data_path": str(tmp_path / "data"), "layer_probe": "u"})
    assert user["layer_probe"] == "u"


def _properties_with_preset(tmp_path, monkeypatch):
    import shutil

    import recbole_milk.config as config_module

    root = tmp_path / "properties"
    shutil.copytree(config_module.properties_dir(), root)
    (root / "trial").mkdir(exist_ok=True)
    (root / "trial" / "MILK.yaml").write_text("align_weight: 0.25\nmodality_dropout: 0.2\n")
    (root / "trial" / "MILK-toy.yaml").write_text("align_weight: 0.75\n")
    monkeypatch.setattr(config_module, "properties_dir", lambda: root)


def test_a_preset_sits_above_the_plugin_defaults_and_below_the_user(tmp_path, monkeypatch):
    _properties_with_preset(tmp_path, monkeypatch)
    base = write_toy_dataset(tmp_path / "data")
    config = Config(model="MILK", config_dict={**base, "preset": "trial"})
    assert config["align_weight"] == 0.75 and config["modality_dropout"] == 0.2  # <Model>-<dataset>.yaml wins
    config = Config(model="MILK", config_dict={**base, "dataset": "other", "preset": "trial"})
    assert config["align_weight"] == 0.25
    config = Config(model="MILK", config_dict={**base, "preset": "trial", "align_weight": 0.1})
    assert config["align_weight"] == 0.1


def test_an_unknown_preset_names_the_ones_there_are(tmp_path, monkeypatch):
    _properties_with_preset(tmp_path, monkeypatch)
    with pytest.raises(ConfigError, match="'preset' = 'fast'.*trial"):
        Config(model="MILK", config_dict={**write_toy_dataset(tmp_path / "data"), "preset": "fast"})


def test_the_recommended_preset_is_package_data_and_equals_its_file(tmp_path):
    base = write_toy_dataset(tmp_path / "data")
    by_name = Config(model="MILK", config_dict={**base, "preset": "recommended"})
    recommended = yaml.safe_load((properties_dir() / "recommended" / "MILK.yaml").read_text())
    assert recommended and all(by_name[key] == value for key, value in recommended.items())
    repository_file = Path(__file__).resolve().parents[1] / "properties" / "recommended" / "MILK.yaml"
    by_file = Config(model="MILK", config_file_list=[str(repository_file)], config_dict=base)
    assert all(by_file[key] == by_name[key] for key in recommended)
    assert by_name["invariance_weight"] == Config(model="MILK", config_dict=base)["invariance_weight"]
