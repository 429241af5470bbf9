"""Every command-line entry point reports a user error as one line on stderr with exit status 2, no traceback."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import write_toy_dataset

from recbole_milk.cli import USER_ERROR_STATUS, run_cli
from recbole_milk.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("cli"), n_users=20, n_items=30)


def run_script(script, *arguments, cwd):
    return subprocess.run([sys.executable, str(REPO / script), *arguments], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def data_arguments(toy):
    return [f"--dataset={toy['dataset']}", f"--data_path={toy['data_path']}", f"--checkpoint_dir={toy['checkpoint_dir']}",
            f"--log_dir={toy['log_dir']}", f"--modalities={json.dumps(toy['modalities'])}"]


CASES = {
    "negative epochs": ("run_recbole_milk.py", ["--model=MILK", "--epochs=-3"], "Option 'epochs' = -3 is invalid"),
    "unknown model": ("run_recbole_milk.py", ["--model=NoSuchModel"], "Unknown model 'NoSuchModel'"),
    "bad option value": ("run_recbole_milk.py", ["--model=MILK", "--fusion=median"], "Option 'fusion' = 'median'"),
    "missing dataset": ("run_recbole_milk.py", ["--model=MILK", "--dataset=nowhere"], "nowhere.inter"),
    "missing params file": ("run_hyper.py", ["--model=BPR", "--params_file=none.hyper"], "params file none.hyper"),
    "missing artefact": ("recommend_new_items.py", ["--artifact=none.pt", "--items=."], "Artefact 'none.pt' not found"),
    "export option": ("dataset_prep/export_cf_embeddings.py", ["--output=cf", "--epochs=0"],
                      "Option 'epochs' = 0 is invalid"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_user_error_is_one_line_on_stderr_with_status_2(case, toy, tmp_path):
    script, arguments, expected = CASES[case]
    if script != "recommend_new_items.py":
        arguments = [*data_arguments(toy), *arguments] if "--dataset=nowhere" not in arguments else [
            *[a for a in data_arguments(toy) if not a.startswith("--dataset=")], *arguments]
    done = run_script(script, *arguments, cwd=tmp_path)
    assert done.returncode == USER_ERROR_STATUS, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and expected in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_unexpected_exceptions_keep_their_traceback():
    def broken():
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_cli(broken)


def test_user_errors_exit_with_status_2(capsys):
    def refuses():
        raise ConfigError("Option 'x' is bad")

    with pytest.raises(SystemExit) as stopped:
        run_cli(refuses)
    assert stopped.value.code == USER_ERROR_STATUS
    assert capsys.readouterr().err == "error: Option 'x' is bad\n"
