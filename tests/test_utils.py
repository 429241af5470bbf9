import pytest
from recbole.model.general_recommender import BPR, LightGCN, Pop

from recbole_milk.errors import UnknownModelError
from recbole_milk.utils import available_models, get_model


def test_builtin_models_resolve_to_recbole_classes():
    assert get_model("BPR") is BPR
    assert get_model("lightgcn") is LightGCN
    assert get_model("Pop") is Pop


def test_plugin_models_are_found_first():
    milk = get_model("MILK")
    assert milk.__module__ == "recbole_milk.model.general_recommender.milk"
    assert "MILK" in available_models()["plugin"]


def test_unknown_model_lists_the_available_names_without_importing_exlib():
    with pytest.raises(UnknownModelError) as error:
        get_model("NoSuchModel")
    message = str(error.value)
    assert "NoSuchModel" in message and "MILK" in message and "BPR" in message and "--model=" in message


def test_model_needing_a_missing_package_says_so():
    pytest.importorskip("recbole")
    try:
        import lightgbm  # noqa: F401
        pytest.skip("lightgbm is installed")
    except ImportError:
        pass
    with pytest.raises(UnknownModelError, match="LightGBM.*install"):
        get_model("LightGBM")


def test_names_of_modules_that_are_not_models_are_unknown_models():
    for name in ("content", "abstract_recommender", "layers", "loss", "general_recommender"):
        with pytest.raises(UnknownModelError, match=f"Unknown model '{name}'"):
            get_model(name)


def test_every_plugin_model_resolves_by_any_capitalisation():
    for name in available_models()["plugin"]:
        assert get_model(name.upper()).__name__ == name == get_model(name.lower()).__name__


def test_looking_up_models_leaves_autograd_anomaly_detection_off():
    import torch

    # RecBole's sine.py switches it on at import time, which would slow every training step.
    get_model("SASRec")
    available_models()
    assert not torch.is_anomaly_enabled()
