"""The contract every content baseline (DUIF, VBPR, MTPR, CLCRec, CCFCRec, DropoutNet, Heater, GAR, GoRec) must keep.

Each check runs once per model, on the small test model of baseline_helpers.make_small_model. The table below holds
what else differs between models: whether it needs a pre-trained CF folder (the two-stage models), the options for the
end-to-end run, and, for VBPR, the non-zero biases a trained model has. Model-specific behaviour lives in
test_model_<name>.py.
"""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import pytest
import torch

from baseline_helpers import (
    TRAIN_BATCH,
    batch,
    cf_folder,  # noqa: F401 (fixture)
    check_buffers_stay_out_of_checkpoints,
    check_full_sort_predict_equals_predict,
    check_loss_is_finite_and_training_lowers_it,
    check_new_items_are_scored_from_content_only,
    check_no_new_item_leakage,
    check_yaml_defaults_pass_the_option_checks,
    make_small_model,
    run_end_to_end,
    toy_cf_folder,  # noqa: F401 (module fixture)
)
from recbole_milk.model.ccfcrec import CCFCRec
from recbole_milk.model.clcrec import CLCRec
from recbole_milk.model.dropoutnet import DropoutNet
from recbole_milk.model.duif import DUIF
from recbole_milk.model.gar import GAR
from recbole_milk.model.gorec import GoRec
from recbole_milk.model.heater import Heater
from recbole_milk.model.mtpr import MTPR
from recbole_milk.model.vbpr import VBPR
from recbole_milk.options import ConfigError, validate_options


def with_trained_biases(model):
    """VBPR after training: non-zero item and content biases (they start at zero)."""
    with torch.no_grad():
        model.item_bias.weight.normal_()
        model.content_bias.weight.normal_()
    return model


@dataclass(frozen=True)
class Baseline:
    model_class: type
    two_stage: bool = False  # trains on a pre-trained CF folder (pretrained_cf_dir)
    end_to_end: Dict[str, Any] = field(default_factory=dict)
    # Applied before the scoring checks (content-only scoring, full_sort_predict == predict).
    as_trained: Optional[Callable] = None

    @property
    def name(self) -> str:
        return self.model_class.__name__


BASELINES = [
    Baseline(DUIF),
    Baseline(VBPR, as_trained=with_trained_biases),
    Baseline(MTPR),
    Baseline(CLCRec),
    Baseline(CCFCRec),
    Baseline(DropoutNet, two_stage=True),
    Baseline(Heater, two_stage=True),
    Baseline(GAR, two_stage=True, end_to_end={"hidden_sizes": [32], "generator_hidden_sizes": [16]}),
    Baseline(GoRec, two_stage=True),
]
TWO_STAGE = [b for b in BASELINES if b.two_stage]

every_baseline = pytest.mark.parametrize("baseline", BASELINES, ids=lambda b: b.name)
every_two_stage_baseline = pytest.mark.parametrize("baseline", TWO_STAGE, ids=lambda b: b.name)


@pytest.fixture
def required_options(baseline, request) -> Dict[str, Any]:
    """Options the model cannot run without: the pre-trained CF folder of the two-stage models."""
    return {"pretrained_cf_dir": request.getfixturevalue("cf_folder")} if baseline.two_stage else {}


@pytest.fixture
def new_model(baseline, required_options):
    return lambda: make_small_model(baseline.model_class, **required_options)


@pytest.fixture
def trained_model(baseline, new_model):
    return lambda: (baseline.as_trained or (lambda model: model))(new_model())


@every_baseline
def test_loss_on_a_toy_batch_is_finite_and_training_lowers_it(new_model, baseline):
    check_loss_is_finite_and_training_lowers_it(new_model())


@every_baseline
def test_new_items_are_scored_from_content_only(trained_model, baseline):
    check_new_items_are_scored_from_content_only(trained_model())


@every_baseline
def test_no_new_item_leakage(new_model, baseline):
    check_no_new_item_leakage(new_model())


@every_baseline
def test_full_sort_predict_equals_predict(trained_model, baseline):
    check_full_sort_predict_equals_predict(trained_model())


@every_baseline
def test_feature_and_cf_buffers_stay_out_of_checkpoints(new_model, baseline):
    check_buffers_stay_out_of_checkpoints(new_model())


@every_baseline
def test_yaml_defaults_pass_the_option_checks(baseline, required_options):
    check_yaml_defaults_pass_the_option_checks(baseline.model_class, **required_options)


@every_two_stage_baseline
def test_pretrained_embeddings_are_frozen_by_training(new_model, baseline):
    model = new_model()
    user_cf, item_cf = model.user_cf.clone(), model.item_cf.clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        model.calculate_loss(batch(*TRAIN_BATCH)).backward()
        optimizer.step()
    assert torch.equal(model.user_cf, user_cf) and torch.equal(model.item_cf, item_cf)


@every_two_stage_baseline
def test_missing_pretrained_folder_is_rejected_before_any_work_with_the_export_command(baseline, tmp_path):
    with pytest.raises(ConfigError, match="pretrained_cf_dir.*export_cf_embeddings.py"):
        validate_options({"pretrained_cf_dir": None}, baseline.model_class)
    with pytest.raises(ConfigError, match="export_cf_embeddings.py"):
        validate_options({"pretrained_cf_dir": str(tmp_path / "absent")}, baseline.model_class)


@every_baseline
def test_runs_end_to_end_through_quick_start(baseline, tmp_path, request):
    overrides = dict(baseline.end_to_end)
    if baseline.two_stage:  # on the embeddings exported by the stage-1 script
        overrides["pretrained_cf_dir"] = str(request.getfixturevalue("toy_cf_folder"))
    result = run_end_to_end(baseline.name, tmp_path, **overrides)
    assert result["model"] == baseline.name and result["epochs_trained"] == 2
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0
