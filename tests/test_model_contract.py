"""The contract every content model of the plugin (MILK and the nine baselines) must keep.

Each check runs once per model, on the small test model of baseline_helpers.make_small_model. The table below holds
what else differs between models: the options for the end-to-end run and, for VBPR, the non-zero biases a trained
model has. Two-stage models (TwoStageRecommender) get their frozen CF rows from the test dataset. Model-specific
behaviour lives in test_model_<name>.py.
"""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction
from baseline_helpers import (
    DIMS,
    USER,
    TRAIN_BATCH,
    WARM,
    all_scores,
    batch,
    check_data_buffers_stay_out_of_checkpoints,
    check_full_sort_predict_equals_predict,
    check_loss_is_finite_and_training_lowers_it,
    check_new_items_are_scored_from_content_only,
    check_no_new_item_leakage,
    check_yaml_defaults_pass_the_option_checks,
    make_dataset,
    make_small_model,
    run_end_to_end,
)

from recbole_milk.errors import DataError
from recbole_milk.inference import NewItemScorer
from recbole_milk.model.abstract_recommender import (
    ContentRecommender,
    TwoStageRecommender,
)
from recbole_milk.model.general_recommender.ccfcrec import CCFCRec
from recbole_milk.model.general_recommender.clcrec import CLCRec
from recbole_milk.model.general_recommender.dropoutnet import DropoutNet
from recbole_milk.model.general_recommender.duif import DUIF
from recbole_milk.model.general_recommender.gar import GAR
from recbole_milk.model.general_recommender.gorec import GoRec
from recbole_milk.model.general_recommender.heater import Heater
from recbole_milk.model.general_recommender.milk import MILK
from recbole_milk.model.general_recommender.mtpr import MTPR
from recbole_milk.model.general_recommender.vbpr import VBPR
from recbole_milk.model.registry import PLUGIN_MODELS
from recbole_milk.options import ConfigError, validate_options


def with_trained_biases(model):
    """VBPR after training: non-zero item and content biases (they start at zero)."""
    with torch.no_grad():
        model.item_bias.weight.normal_()
        model.content_bias.weight.normal_()
    return model


@dataclass(frozen=True)
class ContentModel:
    model_class: type
    end_to_end: Dict[str, Any] = field(default_factory=dict)
    # Applied before the scoring checks (content-only scoring, full_sort_predict == predict).
    as_trained: Optional[Callable] = None

    @property
    def name(self) -> str:
        return self.model_class.__name__

    @property
    def two_stage(self) -> bool:
        return issubclass(self.model_class, TwoStageRecommender)


MODELS = [
    ContentModel(MILK),
    ContentModel(DUIF),
    ContentModel(VBPR, as_trained=with_trained_biases),
    ContentModel(MTPR),
    ContentModel(CLCRec),
    ContentModel(CCFCRec),
    ContentModel(DropoutNet),
    ContentModel(Heater),
    ContentModel(GAR, end_to_end={"hidden_sizes": [32], "generator_hidden_sizes": [16]}),
    ContentModel(GoRec),
]
TWO_STAGE = [m for m in MODELS if m.two_stage]

every_model = pytest.mark.parametrize("content_model", MODELS, ids=lambda m: m.name)
every_two_stage_model = pytest.mark.parametrize("content_model", TWO_STAGE, ids=lambda m: m.name)


@pytest.fixture
def new_model(content_model):
    return lambda **options: make_small_model(content_model.model_class, **options)


@pytest.fixture
def trained_model(content_model, new_model):
    return lambda **options: (content_model.as_trained or (lambda model: model))(new_model(**options))


def test_every_plugin_model_is_in_the_registry_and_in_this_contract():
    assert set(PLUGIN_MODELS.values()) == {m.model_class for m in MODELS}
    assert all(issubclass(m.model_class, ContentRecommender) and m.model_class.servable for m in MODELS)


@every_model
def test_loss_on_a_toy_batch_is_finite_and_training_lowers_it(new_model, content_model):
    check_loss_is_finite_and_training_lowers_it(new_model())


@every_model
def test_new_items_are_scored_from_content_only(trained_model, content_model):
    check_new_items_are_scored_from_content_only(trained_model())


@every_model
def test_no_new_item_leakage(new_model, content_model):
    check_no_new_item_leakage(new_model())


@every_model
def test_full_sort_predict_equals_predict(trained_model, content_model):
    check_full_sort_predict_equals_predict(trained_model())


@every_model
def test_content_and_cf_buffers_stay_out_of_checkpoints(new_model, content_model):
    check_data_buffers_stay_out_of_checkpoints(new_model())


@every_model
def test_yaml_defaults_pass_the_option_checks(content_model):
    check_yaml_defaults_pass_the_option_checks(content_model.model_class)


@every_model
def test_missing_aware_training_hides_modalities_only_in_training_batches(new_model, content_model):
    model = new_model(modality_dropout=0.99)
    items = torch.tensor(WARM)
    torch.manual_seed(0)
    model.train()
    hidden = model.training_content(items)
    assert (hidden.availability.sum(dim=1) >= 1).all()
    assert (hidden.availability <= model.item_availability[items]).all()
    assert (hidden.availability != model.item_availability[items]).any()
    model.eval()
    assert torch.equal(model.training_content(items).availability, model.item_availability[items])
    check_loss_is_finite_and_training_lowers_it(new_model(modality_dropout=0.5))


@every_model
def test_calibration_is_an_affine_map_of_the_scores_per_missing_pattern(trained_model, content_model):
    plain, calibrated = trained_model(), trained_model(score_calibration="pattern")
    assert torch.allclose(all_scores(plain), all_scores(calibrated), atol=1e-5)  # identity until fitted
    scale = torch.linspace(0.5, 2.0, 2 ** len(DIMS))
    shift = torch.linspace(-1.0, 1.0, 2 ** len(DIMS))
    calibrated.set_calibration(scale, shift)
    pattern = calibrated.item_pattern
    expected = all_scores(plain) * scale[pattern] + shift[pattern]
    assert torch.allclose(all_scores(calibrated)[:, 1:], expected[:, 1:], atol=1e-5)
    check_full_sort_predict_equals_predict(calibrated)
    check_new_items_are_scored_from_content_only(calibrated)
    again = trained_model(score_calibration="pattern")
    again.set_calibration(scale, shift)
    again.reset_calibration()
    assert torch.allclose(all_scores(plain), all_scores(again), atol=1e-5)


@every_two_stage_model
def test_pretrained_embeddings_are_frozen_by_training(new_model, content_model):
    model = new_model()
    user_cf, item_cf = model.user_cf.clone(), model.item_cf.clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        model.calculate_loss(batch(*TRAIN_BATCH)).backward()
        optimizer.step()
    assert torch.equal(model.user_cf, user_cf) and torch.equal(model.item_cf, item_cf)


@every_two_stage_model
def test_a_dataset_without_pretrained_embeddings_is_a_clear_error(content_model):
    dataset = make_dataset()
    del dataset.pretrained_cf
    with pytest.raises(DataError, match="attach_pretrained_cf"):
        make_small_model(content_model.model_class, dataset)


@every_two_stage_model
def test_a_pretrained_folder_that_does_not_exist_is_rejected_before_any_work(content_model, tmp_path):
    validate_options({"pretrained_cf_dir": None}, content_model.model_class)  # ~: stage 1 trains its own
    with pytest.raises(ConfigError, match="pretrained_cf_dir"):
        validate_options({"pretrained_cf_dir": str(tmp_path / "absent")}, content_model.model_class)


@every_model
def test_runs_end_to_end_through_quick_start_and_serves_its_artefact(content_model, tmp_path):
    overrides = dict(content_model.end_to_end, pretrain_epochs=2)  # two-stage: stage 1 runs first, by itself
    result = run_end_to_end(content_model.name, tmp_path, saved=True, **overrides)
    assert result["model"] == content_model.name and result["epochs_trained"] == 2
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0
    assert set(result["test_exposure_by_group"]) == set(result["test_result_by_group"])
    scorer = NewItemScorer.from_artifact(result["artifact_file"])
    features = {name: np.random.default_rng(0).normal(size=(3, dim)) for name, dim in
                zip(scorer.modality_names, scorer.modality_dims)}
    users, scores = scorer.recommend_users(features, k=2)
    assert users.shape == (3, 2) and torch.isfinite(scores).all()


HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__")


class HostRead(AssertionError):
    pass


@pytest.fixture
def no_host_reads(monkeypatch):
    """Makes every Tensor method that reads a value back to the host raise: on CUDA each is a device sync and a
    copy. Entered by the test only around the code under test, so the set-up may still use them."""
    def forbid():
        def refuse(name):
            def method(self, *args, **kwargs):
                raise HostRead(f"Tensor.{name} called")
            return method
        for name in HOST_READS:
            monkeypatch.setattr(torch.Tensor, name, refuse(name))
    return forbid


@pytest.mark.parametrize("options", [{}, {"modality_dropout": 0.5, "score_calibration": "pattern"}],
                         ids=["default", "missing-aware-calibrated"])
@every_model
def test_a_training_step_and_a_full_sort_prediction_read_nothing_back_to_the_host(
        new_model, content_model, no_host_reads, options):
    check_no_host_reads(new_model(**options), no_host_reads)


def test_milk_with_every_option_of_the_preset_reads_nothing_back_to_the_host(no_host_reads):
    preset = {"use_invariance": False, "extractor_hidden_sizes": [8], "missing_modality": "cross_modal",
              "modality_dropout": 0.3, "fusion": "learned", "score_calibration": "pattern"}
    models = [make_small_model(MILK, **preset), make_small_model(MILK, missing_modality="learned", fusion="available")]
    for model in models:
        check_no_host_reads(model, no_host_reads)


def check_no_host_reads(model, forbid) -> None:
    interaction = batch(*TRAIN_BATCH)
    users = Interaction({USER: torch.tensor([1, 2, 3])})
    model.train()
    forbid()
    model.calculate_loss(interaction).backward()
    model.eval()
    with torch.no_grad():
        model.full_sort_predict(users)
