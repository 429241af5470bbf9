"""run_hyper.py --tool=Ray: trials in parallel on a real local Ray instance, the same params file, the same
results table and best parameters as the Hyperopt path, chosen on validation only."""
import sys
from pathlib import Path

import pytest
from fixtures import write_toy_dataset

from recbole_milk.errors import ConfigError
from recbole_milk.parallel_tuning import record_trial

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import run_hyper  # noqa: E402


def _toy_arguments(tmp_path):
    config = write_toy_dataset(tmp_path / "data", n_users=30, n_items=50)
    return [f"--dataset={config['dataset']}", f"--data_path={config['data_path']}",
            f"--checkpoint_dir={config['checkpoint_dir']}", f"--log_dir={config['log_dir']}",
            f"--tensorboard_dir={config['tensorboard_dir']}", "--show_progress=False", "--state=WARNING",
            "--save_dataset=False"]


def test_the_best_trial_is_chosen_on_validation_not_test():
    from recbole.trainer.hyper_tuning import HyperTuning

    tuner = HyperTuning(lambda *a: None, params_dict={"choice": {"lr": [1, 2]}}, algo="random")
    trials = [({"lr": 1}, {"model": "BPR", "best_valid_score": 0.2, "valid_score_bigger": True,
                           "best_valid_result": {"ndcg@10": 0.2}, "test_result": {"ndcg@10": 0.9}}),
              ({"lr": 2}, {"model": "BPR", "best_valid_score": 0.3, "valid_score_bigger": True,
                           "best_valid_result": {"ndcg@10": 0.3}, "test_result": {"ndcg@10": 0.1}})]
    for params, result in trials:
        record_trial(tuner, params, result)
    assert tuner.best_params == {"lr": 2} and list(tuner.params2result) == ["lr:1", "lr:2"]


def test_ray_runs_two_trials_in_parallel_and_writes_the_hyperopt_table(tmp_path, capsys):
    pytest.importorskip("hyperopt")
    pytest.importorskip("ray")
    params = tmp_path / "space.hyper"
    params.write_text("learning_rate choice [0.01,0.001]\n")
    tables = {}
    for tool in ("Hyperopt", "Ray"):
        output = tmp_path / f"{tool}.txt"
        tuner = run_hyper.main(["--model=BPR", f"--params_file={params}", "--algo=exhaustive", f"--tool={tool}",
                                "--cpus=2", f"--output_file={output}", *_toy_arguments(tmp_path / tool),
                                "--epochs=2", "--eval_step=1"])
        assert len(tuner.params2result) == 2
        tables[tool] = (tuner.best_params, {key: tuner.params2result[key]["best_valid_result"]
                                            for key in tuner.params2result})
        assert "best params" in capsys.readouterr().out
        assert "learning_rate:0.01" in output.read_text()
    # The same trials give the same validation results and so the same choice, in parallel or not.
    assert tables["Ray"] == tables["Hyperopt"]


def test_a_user_error_in_a_trial_is_raised_as_itself(tmp_path):
    pytest.importorskip("ray")
    params = tmp_path / "space.hyper"
    params.write_text("epochs choice [0]\n")
    with pytest.raises(ConfigError, match="Option 'epochs' = 0"):
        run_hyper.main(["--model=BPR", f"--params_file={params}", "--tool=Ray", "--cpus=1",
                        f"--output_file={tmp_path / 'out.txt'}", *_toy_arguments(tmp_path)])


@pytest.mark.parametrize("arguments,expected", [(["--tool=Spark"], "--tool=Spark is not one of Hyperopt, Ray"),
                                                (["--tool=Ray", "--params_file=/no/such.hyper"], "params file")])
def test_user_errors_print_one_line_and_exit_2(arguments, expected, capsys):
    from recbole_milk.cli import run_cli

    with pytest.raises(SystemExit) as stopped:
        run_cli(lambda: run_hyper.main(["--model=BPR", *arguments]))
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0]
