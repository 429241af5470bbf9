import json
import sys
from pathlib import Path

import pytest
from fixtures import write_toy_dataset

from recbole_milk.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import run_hyper  # noqa: E402
import run_recbole_milk  # noqa: E402

RESULT_KEYS = {"model", "dataset", "best_valid_score", "best_valid_result", "test_result", "test_result_by_group",
               "epochs_trained", "train_seconds_per_epoch", "config"}


def _toy_arguments(tmp_path):
    config = write_toy_dataset(tmp_path / "data", n_users=30, n_items=50)
    return [f"--dataset={config['dataset']}", f"--data_path={config['data_path']}",
            f"--checkpoint_dir={config['checkpoint_dir']}", f"--log_dir={config['log_dir']}",
            f"--tensorboard_dir={config['tensorboard_dir']}", "--show_progress=False", "--state=WARNING",
            f"--modalities={json.dumps(config['modalities'])}"]


def test_script_options_are_split_from_config_overrides():
    args, overrides = run_recbole_milk.parse_args(["--model=BPR", "--learning_rate=0.01", "--result_file=r.json",
                                                   "--topk=[5,10]"])
    assert args.model == "BPR" and args.dataset == "ml-100k-mm" and args.result_file == "r.json"
    assert overrides == ["--learning_rate=0.01", "--topk=[5,10]"]


def test_an_override_without_a_value_is_refused(capsys):
    with pytest.raises(SystemExit):
        run_recbole_milk.parse_args(["--model=BPR", "learning_rate"])
    assert "--key=value" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["MILK", "BPR"])
def test_cli_trains_with_overrides_and_writes_the_result_file(tmp_path, model):
    result_file = tmp_path / "out" / "result.json"
    run_recbole_milk.main([f"--model={model}", *_toy_arguments(tmp_path), "--epochs=3", "--eval_step=1",
                           "--learning_rate=0.005", f"--result_file={result_file}"])
    result = json.loads(result_file.read_text())
    assert RESULT_KEYS <= set(result)
    assert result["model"] == model and result["epochs_trained"] == 3
    assert result["config"]["learning_rate"] == 0.005
    assert all(isinstance(value, float) for value in result["test_result"].values())


def test_hyper_tuning_runs_two_trials_and_exports_the_table(tmp_path, capsys):
    pytest.importorskip("hyperopt")
    params = tmp_path / "space.hyper"
    params.write_text("learning_rate choice [0.01,0.001]\n")
    output = tmp_path / "tuning.txt"
    tuner = run_hyper.main(["--model=BPR", f"--params_file={params}", "--algo=exhaustive",
                            f"--output_file={output}", *_toy_arguments(tmp_path), "--epochs=2", "--eval_step=1"])
    assert len(tuner.params2result) == 2
    assert "learning_rate" in output.read_text()
    assert "best params" in capsys.readouterr().out


def test_hyper_tuning_names_a_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="params file"):
        run_hyper.main(["--model=BPR", f"--params_file={tmp_path / 'none.hyper'}"])
