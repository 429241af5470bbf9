import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import write_toy_dataset

import recbole_milk

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def registered():
    recbole_milk.register()
    yield
    recbole_milk.unregister()


def test_importing_the_plugin_changes_nothing_in_recbole():
    code = ("import recbole_milk, recbole.quick_start.quick_start as q, recbole.config, recbole.utils;"
            "assert q.Config is recbole.config.Config; assert q.get_model is recbole.utils.get_model;"
            "print('untouched')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "untouched" in out.stdout


def test_recbole_run_recbole_finds_milk_and_the_new_item_pipeline_after_register(tmp_path, registered):
    from recbole.quick_start import run_recbole

    config = write_toy_dataset(tmp_path / "data", n_users=30, n_items=50)
    result = run_recbole(model="MILK", dataset=config["dataset"], config_dict=dict(config, epochs=2, eval_step=1))
    assert {"ndcg@10", "recall@20"} <= set(result["test_result"])
    assert not (tmp_path / "log").exists(), "logs must go to the configured log_dir"


def test_recbole_objective_function_finds_milk_after_register(tmp_path, registered):
    from recbole.quick_start import objective_function

    config = write_toy_dataset(tmp_path / "data", n_users=30, n_items=50)
    result = objective_function(dict(config, model="MILK", epochs=2, eval_step=1))
    assert result["model"] == "MILK" and "ndcg@10" in result["test_result"]


def test_unregister_restores_recbole(registered):
    import recbole.config
    import recbole.quick_start.quick_start as quick_start

    recbole_milk.unregister()
    assert quick_start.Config is recbole.config.Config
    recbole_milk.register()
