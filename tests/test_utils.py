import pytest
from recbole.model.general_recommender import BPR, LightGCN, Pop

from recbole_milk.utils import available_models, get_model


def test_builtin_models_resolve_to_recbole_classes():
    assert get_model("BPR") is BPR
    assert get_model("lightgcn") is LightGCN
    assert get_model("Pop") is Pop


def test_plugin_models_are_found_first():
    milk = get_model("MILK")
    assert milk.__module__ == "recbole_milk.model.milk"
    assert "MILK" in available_models()["plugin"]


def test_unknown_model_lists_the_available_names_without_importing_exlib():
    with pytest.raises(ValueError) as error:
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
    with pytest.raises(ImportError, match="LightGBM.*install"):
        get_model("LightGBM")
